"""Pools of simulated engines, KV transfers and disaggregated prefill on small deterministic cases."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from lengthwise.cli import app
from lengthwise.core.policy import make_policy
from lengthwise.sim.cost import ConstantCost, LinearCost
from lengthwise.sim.disaggregated import Disaggregation, kv_ready_times, run_colocated, run_disaggregated
from lengthwise.sim.engine import EngineConfig, QueryConfig, Simulator
from lengthwise.sim.experiment import build_cost
from lengthwise.sim.pool import least_predicted_work, least_unfinished, run_pool
from lengthwise.testing.sim import small_workload

COST = LinearCost(c0=0.01, c_token=1e-4, c_seq=1e-4, c_ctx=1e-6, c_pair=1e-8)
SMALL = EngineConfig(max_num_seqs=4, max_num_batched_tokens=256, block_size=4, num_blocks=400)


requests = st.lists(st.tuples(st.floats(0, 2), st.integers(1, 40), st.integers(1, 60)), min_size=1, max_size=20)


@settings(max_examples=40, deadline=None)
@given(requests, st.sampled_from(["fcfs", "sjf", "sst+deadline:k=1"]), st.booleans())
def test_a_pool_of_one_engine_is_that_engine(reqs, spec: str, query: bool) -> None:
    """Stopping at every submission to route it changes nothing: same times as the engine run alone."""
    w = small_workload(*zip(*sorted(reqs), strict=True))
    config = EngineConfig(**{**SMALL.__dict__, "query": QueryConfig(8, 2, 0.01) if query else None})
    alone = Simulator(config, COST, make_policy(spec)).run(w).records
    pooled = run_pool([Simulator(config, COST, make_policy(spec))], w, w.arrival, least_unfinished).records(w, COST)
    for a, b in zip(alone, pooled, strict=True):
        assert (a.id, a.cached_tokens) == (b.id, b.cached_tokens)
        for when in ("scheduled_time", "first_token_time", "finish_time"):  # decode stretches split: rounding only
            assert getattr(b, when) == pytest.approx(getattr(a, when), rel=1e-9)


def test_routers_balance_requests_or_predicted_tokens() -> None:
    # r0 is predicted long; r1 and r2 short. All arrive before any finishes.
    w = small_workload([0.0, 0.001, 0.002], [4, 4, 4], [100, 10, 10])
    sims = lambda: [Simulator(SMALL, ConstantCost(1.0), make_policy("fcfs")) for _ in range(2)]  # noqa: E731
    by_count = run_pool(sims(), w, w.arrival, least_unfinished)
    by_work = run_pool(sims(), w, w.arrival, least_predicted_work)
    assert [run.arrival_rows for run in by_count.runs] == [[0, 2], [1]]  # a tie goes to the first engine
    assert [run.arrival_rows for run in by_work.runs] == [[0], [1, 2]]  # 10 + 10 predicted tokens < 100


def test_kv_transfers_share_a_prefill_instances_link_one_at_a_time() -> None:
    spec = Disaggregation(kv_bandwidth=1.0, kv_latency=500.0)  # 1 GB/s, 0.5 s
    finish = np.array([1.0, 1.0, 1.5])
    ready = kv_ready_times(finish, np.array([0, 0, 1]), np.array([2e9, 1e9, 1e9]), spec)
    # Link 0 sends 2 GB (1 -> 3 s), then 1 GB (3 -> 4 s); link 1 is free. The latency holds no link.
    assert ready.tolist() == [3.5, 4.5, 3.0]


def test_a_decode_instance_computes_only_the_last_prompt_token() -> None:
    w = small_workload([0.0], [100], [5])
    config = EngineConfig(**{**SMALL.__dict__, "remote_prefill": True})
    rec = Simulator(config, ConstantCost(1.0), make_policy("fcfs")).run(w).records[0]
    assert rec.cached_tokens == 99
    assert (rec.first_token_time, rec.finish_time) == (1.0, 5.0)  # one step per token, the first included


def test_one_request_through_prefill_transfer_and_decode() -> None:
    """Prefill (prompt + postfix when predicting), the link, then one decode step per output token."""
    cost = LinearCost(c0=0.0, c_token=0.01, c_seq=0.0, c_ctx=0.0, c_pair=0.0)  # 10 ms per token computed
    spec = Disaggregation(prefill=1, decode=1, kv_bandwidth=1.0, kv_latency=100.0, kv_bytes_per_token=1e7)
    w = small_workload([0.0], [100], [3])
    for predicted, prefill_s in ((False, 1.0), (True, 1.6)):
        out = run_disaggregated(w, "fcfs", SMALL, cost, spec, postfix_tokens=60, predicted=predicted)
        transfer_s = 100 * 1e7 / 1e9 + 0.1
        ttft = prefill_s + transfer_s + 0.01  # the decode instance computes the last prompt token
        assert out.metrics["mean_ttft_ms"] == pytest.approx(ttft * 1000)
        assert out.metrics["mean_e2el_ms"] == pytest.approx((ttft + 2 * 0.01) * 1000)
        assert out.metrics["kv_bytes_moved"] == 100 * 1e7
        assert out.metrics["mean_kv_transfer_ms"] == pytest.approx(transfer_s * 1000)


def test_colocated_pool_reports_the_query_prefix_reuse() -> None:
    w = small_workload([0.0, 0.5, 1.0, 1.5], [40] * 4, [5] * 4)
    config = EngineConfig(**{**SMALL.__dict__, "query": QueryConfig(8, 2, 0.0)})
    out = run_colocated(w, "sjf", config, COST, 2)
    assert out.metrics["query_prefix_reuse"] == 1.0  # idle engines: every prompt block survives
    assert out.metrics["completed"] == 4


def test_the_h200_profile_gives_llama3_8b_kv_bytes() -> None:
    # 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 bytes (bf16).
    assert build_cost().kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    with pytest.raises(ValueError, match="kv_bytes_per_token"):
        Disaggregation().bytes_per_token(COST)


def test_disaggregation_spec_names_a_bad_key() -> None:
    assert Disaggregation.parse("prefill=3,decode=1,kv_bandwidth=25") == Disaggregation(3, 1, 25.0)
    with pytest.raises(ValueError, match="bandwith"):
        Disaggregation.parse("bandwith=3")
    with pytest.raises(ValueError, match="prefill and decode"):
        Disaggregation.parse("decode=0")


def test_sim_run_disaggregated_prints_both_deployments() -> None:
    runner = CliRunner()
    assert "--disaggregated" in runner.invoke(app, ["sim", "run", "--help"]).output
    result = runner.invoke(app, [
        "sim", "run", "--n", "400", "--max-num-seqs", "16", "--disaggregated", "prefill=1,decode=1",
        "--policy", "fcfs", "--policy", "sjf", "--query", "--load", "0.8",
    ], env={"COLUMNS": "250"})  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("P/D fcfs", "P/D sjf", "colocated fcfs", "colocated sjf +query", "KV moved (GB)", "(2 engines)"):
        assert text in result.output
    bad = runner.invoke(app, ["sim", "run", "--n", "400", "--disaggregated", "decoders=2"])
    assert bad.exit_code == 1 and "unknown key" in bad.output
