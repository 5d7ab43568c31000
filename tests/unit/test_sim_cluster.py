"""The cluster simulator: routers, one shared queue vs per-replica queues, the one timeline of N engines."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lengthwise.core.policy import make_policy
from lengthwise.sim.cluster import ClusterConfig, ClusterSimulator
from lengthwise.sim.cluster_experiment import arms
from lengthwise.sim.conversations import thread_conversations
from lengthwise.sim.cost import ConstantCost, LinearCost
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.routing import LeastRequests, LeastWork, PrefixAffinity, ReplicaLoad, RoundRobin, make_router
from lengthwise.sim.workload import Workload, resample
from lengthwise.testing.sim import small_workload
from sim_strategies import configs, gateway_configs, requests

COST = LinearCost(c0=0.01, c_token=1e-4, c_seq=1e-4, c_ctx=1e-6, c_pair=1e-8)
#: One seat per engine, one time unit per step: who waits behind whom is plain to see.
ONE_SEAT = EngineConfig(max_num_seqs=1, max_num_batched_tokens=64, block_size=4, num_blocks=1000)


def _run(w: Workload, replicas: int, router: str, shared: bool, policy: str = "fcfs", config=ONE_SEAT):
    return ClusterSimulator(config, ConstantCost(1.0), policy, ClusterConfig(replicas, router, shared)).run(w)


# ---- routers ------------------------------------------------------------------------------


def test_round_robin_takes_each_replica_in_turn_and_skips_full_ones() -> None:
    load, rr = ReplicaLoad(3), RoundRobin(3)
    assert [rr.choose(load, 0, 1.0) for _ in range(4)] == [0, 1, 2, 0]
    assert rr.choose(load, 0, 1.0, free=np.array([True, False, True])) == 2  # 1 is full
    assert rr.choose(load, 0, 1.0, free=np.array([True, False, True])) == 0


def test_least_requests_picks_the_fewest_outstanding_and_rotates_ties() -> None:
    load, router = ReplicaLoad(3), LeastRequests(3)
    load.add(0, 5.0)
    load.add(1, 0.1)
    assert router.choose(load, 0, 1.0) == 2
    load.add(2, 0.1)
    # All have one: the tie goes to the replica after the last pick (2), i.e. 0, then 1.
    assert router.choose(load, 0, 1.0) == 0
    assert router.choose(load, 0, 1.0) == 1


def test_least_work_weighs_predicted_work_not_request_counts() -> None:
    load = ReplicaLoad(2)
    load.add(0, 9.0)
    load.add(1, 1.0)
    load.add(1, 1.0)
    assert LeastWork(2).choose(load, 0, 1.0) == 1
    assert LeastRequests(2).choose(load, 0, 1.0) == 0
    assert LeastWork(2).choose(load, 0, 1.0, free=np.array([True, False])) == 0


def test_prefix_affinity_keeps_a_prefix_home_until_its_work_exceeds_the_slack() -> None:
    router, load = PrefixAffinity(4, slack=2.0), ReplicaLoad(4)
    home = router.home(12345)
    assert [router.choose(load, 12345, 1.0) for _ in range(3)] == [home] * 3
    assert len({router.home(key) for key in range(100)}) == 4  # keys spread over the replicas
    load.add(home, 2.0)
    assert router.choose(load, 12345, 1.0) == home  # 2.0 more than the least: within the slack
    load.add(home, 0.5)
    assert router.choose(load, 12345, 1.0) != home
    free = np.ones(4, dtype=bool)
    free[home] = False
    load.remove(home, 0.5)
    assert router.choose(load, 12345, 1.0, free) != home  # no seat at home


def test_replica_load_forgets_rounding_when_a_replica_empties() -> None:
    load = ReplicaLoad(1)
    load.add(0, 0.1)
    load.add(0, 0.2)
    load.remove(0, 0.1)
    load.remove(0, 0.2 + 1e-12)
    assert load.outstanding[0] == 0 and load.work[0] == 0.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [("random", "unknown router 'random'"), ("least-work:slack=1", "bad parameters"),
     ("prefix-affinity:slack=-1", "slack must be >= 0")],
)  # fmt: skip
def test_bad_router_specs_are_named(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_router(spec, 2)


def test_arms_name_the_bad_queue_mode() -> None:
    assert [a.label for a in arms(["least-work"], "both")] == [
        "least-work, per-replica queues", "least-work, shared queue"
    ]
    with pytest.raises(ValueError, match="queues must be one of"):
        arms(None, "global")


# ---- one engine: the cluster's timeline is the single-engine simulator's ------------------------

@settings(max_examples=40, deadline=None)
@given(st.one_of(configs, gateway_configs), requests, st.sampled_from(["fcfs", "sjf", "rr:quantum=3", "sst+deadline"]))
def test_a_one_replica_cluster_is_the_single_engine(cfg: EngineConfig, reqs, spec: str) -> None:
    if max(p + max(o, 8) for _, p, o, _ in reqs) > cfg.num_blocks * cfg.block_size:
        return
    w = small_workload(*zip(*sorted(reqs), strict=True))
    single = Simulator(cfg, COST, make_policy(spec)).run(w)
    cluster = ClusterSimulator(cfg, COST, spec, ClusterConfig(1, "round-robin")).run(w)
    assert cluster.steps == single.steps
    assert cluster.finish_time.tolist() == [r.finish_time for r in single.records]
    assert cluster.first_token_time.tolist() == [r.first_token_time for r in single.records]


# ---- shared queue vs per-replica queues ---------------------------------------------------------


def test_a_shared_queue_sends_a_request_to_the_replica_that_frees_a_seat() -> None:
    """Per-replica queues leave C behind A's 100 steps; the shared queue gives it B's seat at step 3."""
    w = small_workload([0.0, 0.0, 1.0], [4, 4, 4], [100, 2, 2])  # A long, B short, C short
    per_replica = _run(w, 2, "round-robin", shared=False)
    shared = _run(w, 2, "round-robin", shared=True)
    assert per_replica.replica.tolist() == [0, 1, 0]
    assert per_replica.finish_time[2] > per_replica.finish_time[0] == 100.0
    assert shared.replica.tolist() == [0, 1, 1]
    assert shared.finish_time[2] == 4.0  # B's seat frees at 2; C prefills at 2-3, decodes at 3-4
    assert shared.metrics()["mean_e2e_s"] < per_replica.metrics()["mean_e2e_s"]


def test_a_shared_queue_ranks_all_waiting_requests_together() -> None:
    """Both replicas busy; X (predicted long) then Y (predicted short) wait. SJF in one queue gives the
    first free seat to Y; per replica, round robin had already tied X to that seat."""
    w = small_workload([0.0, 0.0, 1.0, 1.5], [4] * 4, [10, 30, 20, 2])
    shared = _run(w, 2, "round-robin", shared=True, policy="sjf")
    assert shared.scheduled_time[3] == 10.0 and shared.replica[3] == 0  # Y takes replica 0's seat first
    assert shared.scheduled_time[2] > shared.scheduled_time[3]
    per_replica = _run(w, 2, "round-robin", shared=False, policy="sjf")
    assert per_replica.replica[2] == 0 and per_replica.scheduled_time[2] == 10.0
    assert per_replica.scheduled_time[3] == 30.0  # Y waits behind replica 1's long request


def test_least_requests_routes_around_a_busy_replica_that_round_robin_queues_behind() -> None:
    w = small_workload([0.0, 1.0, 5.0], [4, 4, 4], [100, 2, 2])
    rr = _run(w, 2, "round-robin", shared=False)
    lor = _run(w, 2, "least-requests", shared=False)
    assert rr.replica.tolist() == [0, 1, 0] and rr.finish_time[2] > 100
    assert lor.replica.tolist() == [0, 1, 1] and lor.finish_time[2] == 7.0


def test_prefix_affinity_finds_a_conversations_prefix_cached_where_round_robin_does_not() -> None:
    # Two turns of conversation 7, far apart; other requests in between push round robin elsewhere.
    w = small_workload([0.0, 50.0, 51.0, 100.0], [40, 8, 8, 40], [2, 2, 2, 2], conversations=[7, 1, 2, 7])
    cfg = replace(ONE_SEAT, max_num_seqs=2)
    affinity = _run(w, 4, "prefix-affinity", shared=False, config=cfg)
    rr = _run(w, 4, "round-robin", shared=False, config=cfg)
    assert affinity.replica[0] == affinity.replica[3]
    assert affinity.cache.hits == 36  # nine full blocks of the 40-token prompt (one token is always computed)
    assert rr.replica[3] != rr.replica[0] and rr.cache.hits == 0


# ---- traffic ------------------------------------------------------------------------------------


def test_conversations_continue_an_open_turn_after_the_think_time() -> None:
    arrival = np.array([0.0, 1.0, 15.0, 16.0, 50.0])
    # Always continue an open turn: r2 and r3 continue r0 and r1; by 50 theirs closed (open 10-20 s after them).
    assert thread_conversations(arrival, turns=1e9, think_s=10.0).tolist() == [0, 1, 0, 1, 2]
    assert thread_conversations(arrival, turns=1, think_s=10.0).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="turns must be >= 1"):
        thread_conversations(arrival, turns=0.5, think_s=10.0)


def test_resample_keeps_rows_whole_and_arrivals_sorted() -> None:
    w = small_workload([0.0, 10.0, 20.0], [1, 2, 3], [10, 20, 30], predicted=[1.5, 2.5, 3.5])
    r = resample(w, 50, seed=1)
    assert len(r) == 50 and r.arrival[0] == 0.0 and np.all(np.diff(r.arrival) >= 0)
    assert np.array_equal(r.output_tokens, r.prompt_tokens * 10)
    assert np.array_equal(r.predicted, r.prompt_tokens + 0.5)
    assert set(r.prompt_tokens.tolist()) == {1, 2, 3}


# ---- the command ----------------------------------------------------------------------------------


def test_sim_cluster_prints_each_arm_against_the_first() -> None:
    from typer.testing import CliRunner

    from lengthwise.cli import app

    args = ["sim", "cluster", "--replicas", "2", "--requests", "600", "--router", "round-robin",
            "--router", "least-requests", "--queues", "both"]  # fmt: skip
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for label in ("round-robin, per-replica queues", "least-requests, per-replica queues",
                  "round-robin, shared queue", "least-requests, shared queue"):  # fmt: skip
        assert label in result.output
    assert "1.000" in result.output  # the first arm against itself
    bad = CliRunner().invoke(app, ["sim", "cluster", "--router", "random"])
    assert bad.exit_code == 1 and "unknown router 'random'" in bad.output


def test_tiling_keeps_each_copys_conversations_apart() -> None:
    w = small_workload([0.0, 1.0, 2.0], [4, 4, 4], [1, 1, 1], conversations=[0, 1, 0])
    assert w.tiled(7).conversations.tolist() == [0, 1, 0, 2, 3, 2, 4]
