import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lengthwise.core.policy import make_policy
from lengthwise.sim.cost import ConstantCost, LinearCost
from lengthwise.sim import engine
from lengthwise.sim.engine import EngineConfig, QueryConfig, Simulator
from lengthwise.testing.sim import small_workload
from sim_strategies import configs, gateway_configs, requests

COST = LinearCost(c0=0.01, c_token=1e-4, c_seq=1e-4, c_ctx=1e-6, c_pair=1e-8)


def test_a_lone_request_takes_its_ideal_latency() -> None:
    """Fast-forwarded decode steps add up to the closed-form latency of a request alone."""
    w = small_workload([0.0], [300], [257])
    rec = Simulator(EngineConfig(max_num_batched_tokens=128, max_num_seqs=4), COST, make_policy("fcfs")).run(w).records[0]
    assert rec.e2el == pytest.approx(rec.ideal_s, rel=1e-9)
    assert rec.output_tokens == 257 and rec.scheduled_time == 0.0


def test_single_slot_engine_serves_fcfs_in_arrival_order() -> None:
    w = small_workload([0, 0.001, 0.002, 0.003], [10] * 4, [50, 5, 20, 1], predicted=[50, 5, 20, 1])
    cfg = EngineConfig(max_num_seqs=1, max_num_batched_tokens=64, block_size=4, num_blocks=1000)
    fcfs = Simulator(cfg, ConstantCost(1.0), make_policy("fcfs")).run(w).records
    assert [r.id for r in sorted(fcfs, key=lambda r: r.finish_time)] == ["r0", "r1", "r2", "r3"]
    sjf = Simulator(cfg, ConstantCost(1.0), make_policy("sjf")).run(w).records
    assert [r.id for r in sorted(sjf, key=lambda r: r.finish_time)] == ["r0", "r3", "r1", "r2"]


@settings(max_examples=60, deadline=None)
@given(st.one_of(configs, gateway_configs), requests, st.sampled_from(["fcfs", "sjf", "srpt", "rr:quantum=4", "mlfq:base_quantum=2", "sjf+aging:rate=50,max_wait=0.5", "hrrn", "sst+deadline:k=1"]))
def test_every_request_finishes_exactly_once_with_its_tokens(cfg: EngineConfig, reqs, spec: str) -> None:
    if max(p + max(o, 8) for _, p, o, _ in reqs) > cfg.num_blocks * cfg.block_size:
        return  # the engine rejects requests larger than its KV cache (tested below)
    reqs = sorted(reqs)
    w = small_workload(*zip(*reqs, strict=True))
    result = Simulator(cfg, COST, make_policy(spec)).run(w)
    recs = result.records
    assert sorted(r.id for r in recs) == sorted(f"r{i}" for i in range(len(reqs)))
    for r, (arrival, prompt, output, _) in zip(recs, reqs, strict=True):
        assert r.output_tokens == output and r.prompt_tokens == prompt
        assert arrival <= r.scheduled_time <= r.first_token_time <= r.finish_time
        if cfg.query is None and not cfg.prefix_caching:  # nothing can beat running alone
            assert r.finish_time - r.arrival >= r.ideal_s * (1 - 1e-9)


def test_the_simulator_teaches_the_service_time_estimator_what_the_engine_did() -> None:
    """Each completion feeds it (times from admission, as the gateway sees them): it learns this engine's costs."""
    rng = np.random.default_rng(1)
    n = 400
    w = small_workload(np.sort(rng.uniform(0, 40, n)), rng.integers(16, 2000, n), rng.integers(2, 200, n))
    policy = make_policy("sst+deadline")
    Simulator(EngineConfig(max_num_seqs=8, max_num_batched_tokens=2048), COST, policy).run(w)
    service = policy.service
    assert service.observations == n
    assert service.prefill_s_per_token == pytest.approx(COST.c_token, rel=0.5)  # a prefill token's marginal cost
    step_per_seq = (COST.c0 + 8 * (COST.c_token + COST.c_seq)) / 8
    assert step_per_seq / 3 < service.decode_s_per_token < step_per_seq * 3  # a decode step shared by the batch


def test_requests_bigger_than_the_kv_cache_are_rejected() -> None:
    with pytest.raises(ValueError, match="more KV"):
        Simulator(EngineConfig(num_blocks=2, block_size=4, max_num_seqs=1), COST, make_policy("fcfs")).run(
            small_workload([0], [5], [10])
        )


def test_kv_exhaustion_preempts_the_latest_lowest_priority_request() -> None:
    # Two requests fit at first (2 x 8 tokens in 6 blocks of 4) but not as they grow.
    w = small_workload([0.0, 0.5], [8, 8], [12, 12])
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=16, block_size=4, num_blocks=7, prefix_caching=False)
    result = Simulator(cfg, ConstantCost(1.0), make_policy("fcfs"), record_segments=True).run(w)
    assert result.preemptions >= 1
    r0, r1 = result.records
    assert r0.finish_time < r1.finish_time  # r1, the later arrival, was the victim
    assert len([s for s in result.segments if s[0] == "r1"]) >= 2
    assert len([s for s in result.segments if s[0] == "r0"]) == 1


def test_prediction_query_prefix_is_reused_when_it_survives_and_lost_when_evicted() -> None:
    cfg = EngineConfig(max_num_seqs=2, max_num_batched_tokens=512, block_size=16, num_blocks=200)
    query = QueryConfig(postfix_tokens=40, output_tokens=3)
    w = small_workload([0.0, 100.0], [320, 320], [10, 10])
    calm = Simulator(EngineConfig(**{**cfg.__dict__, "query": query}), COST, make_policy("fcfs")).run(w)
    assert calm.query_prefix_reuse == 1.0
    assert all(r.cached_tokens == 304 for r in calm.records)  # (320 - 1) // 16 full blocks
    # The real requests wait 5 s after their queries while a burst of others fills the cache.
    busy = small_workload([0.0, 0.0] + [0.1] * 20, [320, 320] + [300] * 20, [10, 10] + [30] * 20)
    delayed = QueryConfig(postfix_tokens=40, output_tokens=3, delay_s=5.0)
    evicted = Simulator(EngineConfig(**{**cfg.__dict__, "query": delayed}), COST, make_policy("fcfs")).run(busy)
    assert evicted.query_prefix_reuse < 0.5
    assert evicted.cache.evicted_blocks > 0


def test_preemptive_engine_lets_a_short_arrival_in_at_once() -> None:
    w = small_workload([0.0, 5.0], [4, 4], [100, 3])
    base = dict(max_num_seqs=1, max_num_batched_tokens=256, block_size=4, num_blocks=1000)
    quiet = Simulator(EngineConfig(**base), ConstantCost(1.0), make_policy("srpt")).run(w).records
    eager = Simulator(EngineConfig(**base, preemptive=True, preempt_threshold=0.0), ConstantCost(1.0), make_policy("srpt")).run(w).records
    assert quiet[1].first_token_time == 101.0  # waits for the long one
    assert eager[1].first_token_time == 6.0
    # r0 gave up its slot for r1's 3 steps; its recompute step also yields its next token.
    assert eager[0].finish_time == 103.0


def _one_decode_step(run) -> float:  # noqa: ANN001 - the engine's run state
    base, slope = run.cost.decode_affine(len(run.batch.requests))
    run._pending = (None, 1, base + slope * run.batch.context_tokens(), 0.0)
    return run.now + run._pending[2]


@settings(max_examples=40, deadline=None)
@given(st.one_of(configs, gateway_configs), requests, st.sampled_from(["fcfs", "sjf", "rr:quantum=3", "sst"]))
def test_fast_forward_matches_stepping_one_decode_at_a_time(cfg: EngineConfig, reqs, spec: str) -> None:
    if max(p + max(o, 8) for _, p, o, _ in reqs) > cfg.num_blocks * cfg.block_size:
        return
    w = small_workload(*zip(*sorted(reqs), strict=True))
    fast = Simulator(cfg, COST, make_policy(spec)).run(w)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.EngineRun, "replan", _one_decode_step)
        slow = Simulator(cfg, COST, make_policy(spec)).run(w)
    assert fast.preemptions == slow.preemptions
    for a, b in zip(fast.records, slow.records, strict=True):
        assert a.finish_time == pytest.approx(b.finish_time, rel=1e-9)
        assert a.first_token_time == pytest.approx(b.first_token_time, rel=1e-9)


def test_admission_stops_at_the_first_request_that_does_not_fit() -> None:
    """vLLM does not skip ahead: a small request waits behind a head that lacks KV space."""
    w = small_workload([0.0, 0.1, 0.2], [20, 30, 4], [10, 2, 2])
    cfg = EngineConfig(max_num_seqs=3, max_num_batched_tokens=64, block_size=4, num_blocks=10, prefix_caching=False)
    r0, r1, r2 = Simulator(cfg, ConstantCost(1.0), make_policy("fcfs")).run(w).records
    assert r1.scheduled_time >= r0.finish_time  # r1's 8 blocks fit only once r0 is done
    assert r2.scheduled_time >= r1.scheduled_time  # r2 fit long before, but waited its turn


_PINNED_BASE = {"max_num_seqs": 6, "max_num_batched_tokens": 96, "block_size": 8}


@pytest.mark.parametrize(
    ("spec", "config", "mean_e2e", "preemptions", "steps", "cache_hits", "query_reuse"),
    [
        # KV exhaustion: recompute preemptions whose prefix mostly comes back from the cache.
        ("sjf", EngineConfig(**_PINNED_BASE, num_blocks=60), 1.879233354666666, 29, 625, 984, None),
        # Arrivals preempt (threshold 0), behind prediction queries.
        ("srpt", EngineConfig(**_PINNED_BASE, num_blocks=120, preemptive=True, preempt_threshold=0.0,
                              query=QueryConfig(postfix_tokens=12, output_tokens=2, delay_s=0.01)),
         1.6087728570000004, 29, 450, 3496, 0.621301775147929),
        # Quantum expiries.
        ("mlfq:base_quantum=4", EngineConfig(**_PINNED_BASE, num_blocks=120, preemptive=True),
         2.417482441333334, 77, 445, 1976, None),
    ],
)  # fmt: skip
def test_pinned_scenarios_keep_their_summary(spec, config, mean_e2e, preemptions, steps, cache_hits, query_reuse) -> None:
    """A refactor of the engine must not move these numbers (recorded from the engine of commit 0560cee)."""
    i = np.arange(30)
    output = 1 + (53 * i) % 149
    w = small_workload(i * 0.07, 8 + (37 * i) % 110, output, predicted=output * (0.5 + (i % 5) * 0.25))
    result = Simulator(config, COST, make_policy(spec)).run(w)
    assert np.mean([r.finish_time - r.arrival for r in result.records]) == pytest.approx(mean_e2e, rel=1e-12)
    assert (result.preemptions, result.steps, result.cache.hits) == (preemptions, steps, cache_hits)
    assert result.query_prefix_reuse == (None if query_reuse is None else pytest.approx(query_reuse, rel=1e-12))


def test_the_query_window_rule_keeps_the_prefix_cached() -> None:
    """Queried on arrival, five prompts outlive the cache; queried only at the head, each is reused whole."""
    w = small_workload([0.0] * 5, [40] * 5, [20] * 5, fallback=[20] * 5)
    base = dict(max_num_seqs=1, max_num_batched_tokens=64, block_size=4, num_blocks=30)
    everyone = Simulator(EngineConfig(**base, query=QueryConfig(8, 2)), ConstantCost(1.0), make_policy("fcfs")).run(w)
    at_head = Simulator(EngineConfig(**base, query=QueryConfig(8, 2, window=1)), ConstantCost(1.0), make_policy("fcfs")).run(w)
    assert everyone.query_prefix_reuse < 0.5
    assert at_head.query_prefix_reuse == 1.0
    assert all(r.cached_tokens == 36 for r in at_head.records)  # 9 full blocks, one token left to compute


def test_the_window_orders_by_the_fallback_until_the_query_answers() -> None:
    # The fallback ranks r0 < r1 < r2; the self-prediction the other way round.
    w = small_workload([0.0, 0.0, 0.0], [4, 4, 4], [5, 5, 5], predicted=[30, 20, 10], fallback=[1, 2, 3])
    base = dict(max_num_seqs=1, max_num_batched_tokens=64, block_size=4, num_blocks=100)

    def order(window: int) -> list[str]:
        config = EngineConfig(**base, query=QueryConfig(2, 1, window=window))
        records = Simulator(config, ConstantCost(1.0), make_policy("sjf")).run(w).records
        return [r.id for r in sorted(records, key=lambda r: r.scheduled_time)]

    assert order(1) == ["r0", "r1", "r2"]  # one at a time, in the fallback's order
    assert order(3) == ["r2", "r1", "r0"]  # all queried first, then the self-predictions decide
    with pytest.raises(ValueError, match="fallback"):
        Simulator(EngineConfig(**base, query=QueryConfig(window=1)), ConstantCost(1.0), make_policy("sjf")).run(
            small_workload([0.0], [4], [5])
        )


@settings(max_examples=40, deadline=None)
@given(requests, st.integers(1, 4), st.integers(40, 200), st.sampled_from(["fcfs", "sjf", "sst+deadline:k=1"]))
def test_with_the_query_window_every_request_finishes_once(reqs, window: int, blocks: int, spec: str) -> None:
    if max(p + max(o, 8) for _, p, o, _ in reqs) > blocks * 4:
        return
    arrival, prompt, output, predicted = zip(*sorted(reqs), strict=True)
    w = small_workload(arrival, prompt, output, predicted, fallback=predicted[::-1])
    config = EngineConfig(max_num_seqs=3, max_num_batched_tokens=48, block_size=4, num_blocks=blocks,
                          query=QueryConfig(8, 2, window=window))  # fmt: skip
    records = Simulator(config, COST, make_policy(spec)).run(w).records
    assert sorted(r.id for r in records) == sorted(f"r{i}" for i in range(len(reqs)))
    assert all(r.output_tokens == o and r.arrival <= r.scheduled_time for r, (_, _, o, _) in zip(records, sorted(reqs), strict=True))
