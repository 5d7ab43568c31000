"""A cluster: N simulated engines behind a router, with one shared queue in front or a queue per engine.

Per-replica queues: the router sends each request to a replica as it arrives and
the replica's engine ranks its waiting requests by the policy (vLLM with
priorities, or a gateway per engine). Shared queue: requests wait in one
`WaitingQueue` ranked by the policy, as in the gateway's queue mode, and each
replica takes the best waiting request whenever it has a free seat (`seats`, by
default the engine's max_num_seqs); on arrival the router picks among the replicas
with a free seat. Each engine is the single-engine model (`lengthwise.sim.engine`).

The engines share one `Timeline` (a heap of their stretches): before a request is
routed at time t every stretch that ends by t is applied, so the router sees each
replica as it is at t. The work is per engine event, like one engine's, plus the
router's choice per request.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from lengthwise.core.policy.base import Job
from lengthwise.core.policy.fcfs import FCFS
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.core.policy.registry import make_policy
from lengthwise.core.policy.service import ServiceTime
from lengthwise.sim.config import EngineConfig
from lengthwise.sim.cost import CostModel
from lengthwise.sim.engine import EngineRun, RequestMaker, Simulator, check_workload
from lengthwise.sim.kv import CacheStats
from lengthwise.sim.request import SimRequest
from lengthwise.sim.routing import ReplicaLoad, make_router
from lengthwise.sim.timeline import Timeline
from lengthwise.sim.workload import Workload


@dataclass(frozen=True)
class ClusterConfig:
    """How many engines, how requests reach them."""

    replicas: int
    router: str = "least-work"
    shared_queue: bool = False
    #: Shared queue: requests a replica holds at once (the gateway's seats per backend); None: max_num_seqs.
    seats: int | None = None

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {self.replicas}")
        if self.seats is not None and self.seats < 1:
            raise ValueError(f"seats must be >= 1, got {self.seats}")
        make_router(self.router, self.replicas)


@dataclass
class ClusterResult:
    """Per request (workload order): times and where it ran; engine totals; the simulator's own cost."""

    arrival: np.ndarray
    first_token_time: np.ndarray
    finish_time: np.ndarray
    scheduled_time: np.ndarray
    replica: np.ndarray
    steps: int
    preemptions: int
    cache: CacheStats
    wall_s: float
    cpu_s: float

    def metrics(self) -> dict[str, float]:
        """Latencies in seconds, the prefix-cache hit rate, load spread, and requests simulated per second."""
        e2e = self.finish_time - self.arrival
        ttft = self.first_token_time - self.arrival
        per_replica = np.bincount(self.replica)
        n = e2e.size
        return {
            "requests": float(n),
            "mean_e2e_s": float(e2e.mean()),
            "p50_e2e_s": float(np.percentile(e2e, 50)),
            "p99_e2e_s": float(np.percentile(e2e, 99)),
            "mean_ttft_s": float(ttft.mean()),
            "p99_ttft_s": float(np.percentile(ttft, 99)),
            "max_wait_s": float((self.scheduled_time - self.arrival).max()),
            "prefix_cache_hit_rate": self.cache.hit_rate,
            "preemptions": float(self.preemptions),
            "busiest_replica_share": float(per_replica.max() * per_replica.size / n),
            "sim_requests_per_s": n / self.wall_s if self.wall_s > 0 else math.inf,
            "sim_requests_per_cpu_s": n / self.cpu_s if self.cpu_s > 0 else math.inf,
        }


class ClusterSimulator:
    """Runs a workload through `cluster.replicas` engine models under one policy spec and one router."""

    def __init__(self, config: EngineConfig, cost: CostModel, policy: str, cluster: ClusterConfig) -> None:
        make_policy(policy)
        self.config, self.cost, self.policy, self.cluster = config, cost, policy, cluster

    def run(self, workload: Workload, progress: Callable[[int], None] | None = None) -> ClusterResult:
        """Simulate every request to completion; `progress(n_done)` is called every 1,000 completions."""
        check_workload(workload, self.config)
        return _ClusterRun(self, workload, progress).run()


class _ClusterRun:
    """The state of one cluster simulation."""

    def __init__(self, sim: ClusterSimulator, workload: Workload, progress: Callable[[int], None] | None) -> None:
        cluster, config, n = sim.cluster, sim.config, len(workload)
        self.workload, self.progress = workload, progress
        self.requests = RequestMaker(workload)
        self.router = make_router(cluster.router, cluster.replicas)
        self.load = ReplicaLoad(cluster.replicas)
        self.seats = cluster.seats or config.max_num_seqs
        #: What the router believes a request costs: engine-seconds at the H200 priors, from its prediction.
        self.work_model = ServiceTime()
        self.queue = WaitingQueue(make_policy(sim.policy)) if cluster.shared_queue else None
        self.engines = [
            EngineRun(
                Simulator(config, sim.cost, FCFS() if self.queue is not None else make_policy(sim.policy)), workload,
                None, routed=True, requests=self.requests, on_finish=partial(self.finished, i),
                service=None if self.queue is None else self.queue.policy.service,
            )
            for i in range(cluster.replicas)
        ]  # fmt: skip
        self.timeline = Timeline(self.engines, None if self.queue is None else self.refill)
        self.in_flight = 0
        self.done = 0
        self.work = [0.0] * n
        self.replica = [0] * n
        self.first_token = [0.0] * n
        self.finish = [0.0] * n
        self.scheduled = [0.0] * n

    # ---- the timeline -------------------------------------------------------------------

    def run(self) -> ClusterResult:
        # Finished requests are freed by reference counting (`EngineRun.finish` breaks their one cycle),
        # so the cyclic collector, which costs a fifth of the run scanning live requests, can pause.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if gc_was_enabled:
                gc.enable()

    def _run(self) -> ClusterResult:
        started, cpu_started = time.perf_counter(), time.process_time()
        columns, work_model, workload = self.requests, self.work_model, self.workload
        timeline = self.timeline
        for k, t in enumerate(columns.arrival):
            timeline.advance_to(t)
            prompt, predicted = columns.prompt_tokens[k], columns.predicted[k]
            self.work[k] = work = work_model.seconds(prompt, predicted)
            if self.queue is None:
                self.assign(self.router.choose(self.load, columns.cache_key(k), work), k, t)
            else:  # the queue ranks a job as the gateway would; the engine makes its own request when it gets it
                self.queue.add(Job(workload.request_id(k), t, predicted, prompt, payload=k), t)
                self.dispatch(t)
        timeline.finish()
        if self.queue is not None and len(self.queue):
            raise RuntimeError("simulation stuck: requests wait in the shared queue")
        if self.progress is not None:
            self.progress(self.done)
        return self.result(time.perf_counter() - started, time.process_time() - cpu_started)

    # ---- routing ------------------------------------------------------------------------

    def assign(self, i: int, row: int, t: float) -> None:
        """Send workload row `row` to replica `i` at `t`: it joins the engine's arrivals, cutting a decode stretch."""
        self.load.add(i, self.work[row])
        self.in_flight += 1
        self.replica[row] = i
        self.timeline.push(i, row, t)

    def dispatch(self, t: float) -> None:
        """Shared queue: the best waiting requests go to replicas with a free seat, chosen by the router."""
        queue, load, seats = self.queue, self.load, self.seats
        assert queue is not None
        while len(queue) and self.in_flight < seats * len(self.engines):
            job = queue.pop(t)
            assert job is not None
            row, free = job.payload, load.outstanding < seats
            self.assign(self.router.choose(load, self.requests.cache_key(row), self.work[row], free), row, t)

    def refill(self, i: int, now: float) -> None:
        """Shared queue: replica `i` freed seats; it takes the best waiting requests."""
        queue = self.queue
        assert queue is not None
        while len(queue) and self.load.outstanding[i] < self.seats:
            job = queue.pop(now)
            assert job is not None
            self.assign(i, job.payload, now)

    def finished(self, i: int, request: SimRequest) -> None:
        k = request.index
        assert request.first_token_time is not None and request.scheduled_time is not None
        self.first_token[k], self.finish[k], self.scheduled[k] = (
            request.first_token_time, request.finish_time, request.scheduled_time
        )
        self.load.remove(i, self.work[k])
        self.in_flight -= 1
        self.done += 1
        if self.progress is not None and self.done % 1000 == 0:
            self.progress(self.done)

    def result(self, wall_s: float, cpu_s: float) -> ClusterResult:
        stats = [e.scheduler.prefix_cache.stats for e in self.engines]
        cache = CacheStats(sum(s.queries for s in stats), sum(s.hits for s in stats), sum(s.evicted_blocks for s in stats))
        return ClusterResult(
            self.workload.arrival, np.array(self.first_token), np.array(self.finish), np.array(self.scheduled),
            np.array(self.replica), sum(e.batch.steps for e in self.engines),
            sum(e.scheduler.preemptions for e in self.engines), cache, wall_s, cpu_s,
        )  # fmt: skip
