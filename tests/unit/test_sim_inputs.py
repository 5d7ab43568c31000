"""Workloads, arrivals, prediction noise and cost models: the simulator's inputs."""

import json
from pathlib import Path

import numpy as np
import pytest

from lengthwise.core.stats import kendall_tau
from lengthwise.sim.cost import ConstantCost, LinearCost, ProfiledCost, load_cost_model
from lengthwise.sim.engine import EngineConfig
from lengthwise.sim.experiment import Arm, run_arms
from lengthwise.sim.predictions import make_predictions, output_cap, read_eval_pairs, replayed, sampled_kendall_tau
from lengthwise.workload.arrivals import gamma_arrivals, mean_rate, rescale_to_rate, tile_arrivals
from lengthwise.testing.sim import small_workload
from lengthwise.workload.azure import load_azure

PROFILE = {
    "layers": 2,
    "gemm_ms_per_layer": {"1": 0.1, "64": 0.2, "1024": 1.0},
    "lm_head_ms": {"1": 0.05, "1024": 0.5},
    "decode_attn_ms_per_layer": {"1x512": 0.01, "8x512": 0.03, "64x2048": 0.5},
    "prefill_attn_ms_per_layer": {"128": 0.01, "1024": 0.2, "4096": 3.0},
}


def test_gamma_arrivals_hit_the_rate_and_burstiness_spreads_gaps() -> None:
    poisson = gamma_arrivals(20_000, rate=5.0, burstiness=1.0, seed=1)
    bursty = gamma_arrivals(20_000, rate=5.0, burstiness=0.25, seed=1)
    assert poisson[0] == 0 and np.all(np.diff(poisson) >= 0)
    assert mean_rate(poisson) == pytest.approx(5.0, rel=0.03)
    assert np.diff(bursty).std() > 1.5 * np.diff(poisson).std()
    assert np.all(gamma_arrivals(5, float("inf")) == 0)
    with pytest.raises(ValueError):
        gamma_arrivals(5, rate=0)


def test_rescale_keeps_the_pattern_and_tile_continues_in_time() -> None:
    a = np.array([10.0, 11.0, 15.0, 16.0])
    scaled = rescale_to_rate(a, rate=3.0)
    assert mean_rate(scaled) == pytest.approx(3.0)
    assert np.allclose(np.diff(scaled) / np.diff(scaled).sum(), np.diff(a) / np.diff(a).sum())
    tiled = tile_arrivals(a, 10)
    assert tiled.size == 10 and np.all(np.diff(tiled) > 0)


def test_azure_trace_loads_and_tiles(tmp_path: Path) -> None:
    csv = tmp_path / "trace.csv"
    csv.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.5,100,10\n0.0,50,0\n2.0,70,7\n")
    t = load_azure(csv)
    assert t.arrival.tolist() == [0.0, 0.5, 2.0]
    assert t.output_tokens.tolist() == [1, 10, 7]  # a zero-token answer counts as one token
    big = load_azure(csv, n=7)
    assert len(big) == 7 and big.prompt_tokens.tolist()[3:6] == [50, 100, 70]
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="columns"):
        load_azure(tmp_path / "bad.csv")


def test_lognormal_noise_is_tuned_to_the_target_kendall_tau() -> None:
    output = np.random.default_rng(123).lognormal(5, 1, 3000).astype(int) + 1
    for tau in (0.3, 0.5, 0.8):
        assert sampled_kendall_tau(make_predictions(f"lognormal:tau={tau}", output), output) == pytest.approx(tau, abs=0.03)
    assert np.array_equal(make_predictions("oracle", output), output)
    with pytest.raises(ValueError, match="unknown prediction model"):
        make_predictions("psychic", output)


def test_calibrated_predictions_keep_the_order_and_undo_the_noise_s_overstatement() -> None:
    output = np.random.default_rng(7).lognormal(5, 1, 4000).astype(int) + 1
    raw, cal = make_predictions("lognormal:tau=0.5", output), make_predictions("calibrated:lognormal:tau=0.5", output)
    assert kendall_tau(cal, output) == pytest.approx(kendall_tau(raw, output), abs=1e-9)
    top = raw >= np.quantile(raw, 0.9)  # what a length-aware queue leaves waiting
    assert raw[top].sum() > 3 * output[top].sum()  # a raw log-normal prediction overstates them by far
    assert cal[top].sum() == pytest.approx(output[top].sum(), rel=0.3)


def test_replayed_predictions_keep_a_predictor_without_signal_signal_free(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "eval.jsonl"
    lines = [
        json.dumps({"id": i, "actual_tokens": int(a), "variants": {"seed": {"parsed": 10, "summary": None}}})
        for i, a in enumerate(rng.integers(1, 512, 300))
    ]
    lines += ["not json", json.dumps({"id": "x", "actual": 5})]  # skipped: no prediction
    path.write_text("\n".join(lines))
    actual, predicted = read_eval_pairs(path)
    assert actual.size == 300 and set(predicted) == {10.0}
    assert set(make_predictions(f"replay:{path}", np.array([3, 50, 400]))) == {10.0}
    calibrated = tmp_path / "cal.jsonl"
    calibrated.write_text(json.dumps({"actual": 100, "predicted": 3, "calibrated": 90}) + "\n")
    assert read_eval_pairs(calibrated)[1].tolist() == [90.0]


def test_replay_draws_uniformly_among_all_records_tied_at_the_cap() -> None:
    """Long requests must not all borrow the predictions of the same few capped records."""
    actual = np.concatenate([np.arange(10, 210, 10), np.full(40, 512)])
    predicted = np.arange(actual.size, dtype=float)
    for length in (512, 900):
        drawn = replayed(np.full(8000, length), actual, predicted, k=5, seed=3)
        values, counts = np.unique(drawn, return_counts=True)
        assert values.tolist() == predicted[20:].tolist()
        assert counts.min() > 0.7 * 200 and counts.max() < 1.3 * 200  # 8000 draws over 40 records


def test_replay_draws_among_the_k_nearest_and_all_tied_with_the_kth() -> None:
    rng = np.random.default_rng(0)
    actual = rng.integers(1, 60, 200)  # many ties
    predicted = np.arange(actual.size, dtype=float)
    output = np.repeat(np.arange(0, 80), 300)
    drawn = replayed(output, actual, predicted, k=7, seed=1).astype(int)
    for x in np.unique(output):
        dist = np.abs(actual - x)
        nearest = set(np.flatnonzero(dist <= np.sort(dist)[6]).tolist())
        assert set(drawn[output == x].tolist()) == nearest


def test_replay_is_seeded() -> None:
    actual, predicted = np.array([5, 5, 5, 5, 9]), np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    draws = [replayed(np.full(50, 5), actual, predicted, k=1, seed=seed) for seed in (7, 7, 8)]
    assert np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])


def test_output_cap_is_the_replay_records_longest_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps({"actual": a, "predicted": 10}) for a in (30, 512, 200, 512)))
    assert output_cap(f"replay:{path}") == 512
    assert output_cap(f"replay:{path},cap=300") == 300
    assert output_cap("oracle") is None and output_cap("lognormal:tau=0.5") is None
    with pytest.raises(ValueError, match="cap must be >= 1"):
        output_cap(f"replay:{path},cap=0")


def test_linear_cost_fit_recovers_its_coefficients() -> None:
    truth = LinearCost(c0=0.02, c_token=1e-4, c_seq=3e-4, c_ctx=2e-7, c_pair=1e-9)
    rng = np.random.default_rng(0)
    rows, secs = [], []
    for _ in range(60):
        b, ctx, p = int(rng.integers(1, 8)), int(rng.integers(0, 20_000)), int(rng.integers(0, 2048))
        chunks = ((p, 0),) if p else ()
        rows.append(LinearCost.features(b + p, b + bool(p), ctx, chunks))
        secs.append(truth.step_time(b + p, b + bool(p), ctx, chunks))
    fitted = LinearCost.fit(rows, secs)
    for name in LinearCost.FEATURES:
        assert getattr(fitted, name) == pytest.approx(getattr(truth, name), rel=1e-3)


def test_profiled_cost_is_affine_in_decode_context_and_loads_from_json(tmp_path: Path) -> None:
    cost = ProfiledCost(PROFILE, overhead_s=0.001)
    base, slope = cost.decode_affine(8)
    for ctx in (0, 5_000, 50_000):
        assert cost.step_time(8, 8, ctx, ()) == pytest.approx(base + slope * ctx)
    assert cost.step_time(1032, 9, 4000, ((1024, 0),)) > cost.step_time(8, 8, 4000, ())
    path = tmp_path / "p.json"
    path.write_text(json.dumps(PROFILE))
    assert isinstance(load_cost_model(path), ProfiledCost)
    path.write_text(json.dumps({"kind": "linear", "coef": {"c0": 1}}))
    with pytest.raises(ValueError, match="lacks"):
        load_cost_model(path)


def test_run_arms_takes_each_request_s_own_prediction() -> None:
    """A replay that already holds each request's prediction (`benchmarks/learned_dist_sim.py`) is scheduled by it."""
    w = small_workload([0, 0.001, 0.002, 0.003], [10] * 4, [50, 5, 20, 1])
    cfg = EngineConfig(max_num_seqs=1, max_num_batched_tokens=64, block_size=4, num_blocks=1000)
    told = np.array([1.0, 3.0, 2.0, 4.0])  # the reverse of the true order after the first
    (sjf,) = run_arms(w, [Arm("sjf")], cfg, ConstantCost(1.0), told)
    assert [r.id for r in sorted(sjf.result.records, key=lambda r: r.finish_time)] == ["r0", "r2", "r1", "r3"]
