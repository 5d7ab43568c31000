"""Cluster experiments: one trace resampled to N replicas' worth of traffic, several (router, queue) arms.

The workload: the source's requests resampled to `requests` rows (its rate pattern
over time and its length mix, `workload.resample`), the rate set to `load` × N ×
one engine's FCFS capacity for that length mix (`load.capacity`: the single-engine
simulator's own definition of load), predictions drawn, and the requests threaded
into conversations (`conversations`) so that prefix affinity has prefixes to keep.
Everything here is shared by `lengthwise sim cluster` and `benchmarks/sim_cluster.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from lengthwise.sim.cluster import ClusterConfig, ClusterResult, ClusterSimulator
from lengthwise.sim.config import EngineConfig
from lengthwise.sim.conversations import thread_conversations
from lengthwise.sim.cost import CostModel
from lengthwise.sim.load import at_load, capacity
from lengthwise.sim.predictions import make_predictions
from lengthwise.sim.routing import ROUTERS
from lengthwise.sim.workload import Workload, resample


@dataclass(frozen=True)
class Traffic:
    """How the cluster's traffic is made from a one-engine source."""

    replicas: int
    requests: int
    load: float = 0.9
    predictions: str = "lognormal:tau=0.5"
    #: Mean turns per conversation (1: no conversations) and the user's think time between turns.
    turns: float = 4.0
    think_s: float = 15.0
    seed: int = 0


def cluster_workload(source: Workload, traffic: Traffic, config: EngineConfig, cost: CostModel) -> tuple[Workload, float]:
    """The cluster's workload and one engine's FCFS capacity (req/s) it was scaled by."""
    per_engine = capacity(source, replace(config, query=None), cost)
    w = at_load(resample(source, traffic.requests, traffic.seed), traffic.load, per_engine * traffic.replicas)
    w = w.with_predictions(make_predictions(traffic.predictions, w.output_tokens, traffic.seed))
    if traffic.turns > 1:
        w = replace(w, conversations=thread_conversations(w.arrival, traffic.turns, traffic.think_s, traffic.seed))
    return w, per_engine


@dataclass(frozen=True)
class ClusterArm:
    router: str
    shared_queue: bool

    @property
    def label(self) -> str:
        return f"{self.router}, {'shared queue' if self.shared_queue else 'per-replica queues'}"


def arms(routers: Sequence[str] | None, queues: str) -> list[ClusterArm]:
    """Each router (default: all) with per-replica queues, a shared queue or both (``per-replica|shared|both``)."""
    modes = {"per-replica": (False,), "shared": (True,), "both": (False, True)}
    if queues not in modes:
        raise ValueError(f"queues must be one of {', '.join(modes)}, got {queues!r}")
    return [ClusterArm(r, shared) for shared in modes[queues] for r in (routers or list(ROUTERS))]


def run_cluster_arms(
    workload: Workload, replicas: int, arms: Sequence[ClusterArm], config: EngineConfig, cost: CostModel, policy: str,
    *, on_arm: Callable[[ClusterArm], None] | None = None, progress: Callable[[int], None] | None = None,
) -> list[tuple[ClusterArm, ClusterResult]]:  # fmt: skip
    """Run each arm on the same workload (arms are validated before any runs)."""
    sims = [ClusterSimulator(config, cost, policy, ClusterConfig(replicas, a.router, a.shared_queue)) for a in arms]
    out = []
    for arm, sim in zip(arms, sims, strict=True):
        if on_arm is not None:
            on_arm(arm)
        out.append((arm, sim.run(workload, progress)))
    return out
