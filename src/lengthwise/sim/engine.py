"""The engine model's event loop: vLLM v1's continuous batching, advanced in time by a cost model.

Each step the `Scheduler` decides who runs (vLLM's admission and preemption, see
`lengthwise.sim.scheduler`); the loop charges the step's time from the cost
model, retires finished requests and submits a real request once its prediction
query has answered.

Speed: decode-only stretches in which nothing can change (no arrival that could
be admitted, no completion, no quantum expiry, KV space enough) are advanced in
one go with the cost model's affine decode time, so the work is per event, not
per token. The decode batch keeps its KV block count exactly in O(block_size)
(see `lengthwise.sim.batch`).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.service import ServiceTime
from lengthwise.core.records import RequestRecord
from lengthwise.sim.config import EngineConfig, QueryConfig
from lengthwise.sim.cost import CostModel
from lengthwise.sim.kv import CacheStats
from lengthwise.sim.request import SimRequest
from lengthwise.sim.scheduler import Plan, Scheduler
from lengthwise.sim.workload import Workload

__all__ = ["EngineConfig", "EngineRun", "QueryConfig", "RequestMaker", "ResumeStats", "SimResult", "Simulator"]


@dataclass(frozen=True)
class ResumeStats:
    """Prefill after preemptions: the work a preemption wastes (nothing generated is thrown away)."""

    #: Prefill tokens computed in the whole run (every admission's uncached tokens).
    prefill_tokens: int
    #: Tokens resumes re-sent (prompt + generated), those the prefix cache had, those computed again.
    tokens: int
    cached_tokens: int
    computed_tokens: int

    @property
    def prefill_share(self) -> float:
        """The share of all prefill spent recomputing resumes: the wasted work."""
        return self.computed_tokens / self.prefill_tokens if self.prefill_tokens else 0.0

    @property
    def cached_share(self) -> float:
        """The share of resumed tokens the prefix cache still held."""
        return self.cached_tokens / self.tokens if self.tokens else 0.0


@dataclass
class SimResult:
    records: list[RequestRecord]
    steps: int
    preemptions: int
    cache: CacheStats
    #: Of the prompt tokens a prediction query could leave cached (its prompt's full
    #: blocks), the share the real request found: the seed's prefix-reuse constraint.
    query_prefix_reuse: float | None
    resumes: ResumeStats
    wall_s: float
    #: (request id, start, end) of every stretch a request ran, with `record_segments`.
    segments: list[tuple[str, float, float]] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        out = {
            "sim_steps": self.steps,
            "preemptions": self.preemptions,
            "resume_prefill_tokens": self.resumes.computed_tokens,
            "resume_prefill_share": self.resumes.prefill_share,
            "resume_cached_share": self.resumes.cached_share,
            "engine_prefix_cache_hit_rate": self.cache.hit_rate,
            "sim_wall_s": self.wall_s,
            "sim_requests_per_s": len(self.records) / self.wall_s if self.wall_s > 0 else 0.0,
        }
        if self.query_prefix_reuse is not None:
            out["query_prefix_reuse"] = self.query_prefix_reuse
        return out


class Simulator:
    """Runs a workload through the engine model under one policy."""

    def __init__(self, config: EngineConfig, cost: CostModel, policy: Policy, *, record_segments: bool = False) -> None:
        self.config, self.cost, self.policy = config, cost, policy
        self.record_segments = record_segments

    def run(self, workload: Workload, progress: Callable[[int], None] | None = None) -> SimResult:
        """Simulate every request to completion; `progress(n_done)` is called now and then."""
        started = time.perf_counter()
        run = self.start(workload, progress)
        run.loop()
        return run.result(time.perf_counter() - started)

    def start(self, workload: Workload, progress: Callable[[int], None] | None = None, *, routed: bool = False) -> EngineRun:
        """The run's state; with `routed`, requests arrive only as a pool pushes them (see `lengthwise.sim.pool`)."""
        check_workload(workload, self.config)
        return EngineRun(self, workload, progress, routed=routed)


def check_workload(workload: Workload, config: EngineConfig) -> None:
    """Every request must fit in one engine's KV cache (or it could never finish), and the query window
    rule needs the fallback predictions."""
    limit = config.num_blocks * config.block_size
    extra = config.query.postfix_tokens if config.query else 0
    too_big = np.flatnonzero(workload.prompt_tokens + np.maximum(workload.output_tokens, extra) > limit)
    if too_big.size:
        raise ValueError(
            f"{too_big.size} requests need more KV than the engine has ({limit} tokens), "
            f"e.g. {workload.request_id(int(too_big[0]))}"
        )
    if config.query is not None and config.query.window and workload.fallback is None:
        raise ValueError("the query window rule needs the workload's fallback predictions")


class RequestMaker:
    """A workload's columns as Python lists (element access on numpy arrays is slow in the hot loop),
    made once and shared by every engine of a cluster; `__call__` makes row `i`'s request when it arrives."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.arrival: list[float] = workload.arrival.tolist()
        self.prompt_tokens: list[int] = workload.prompt_tokens.tolist()
        self.output_tokens: list[int] = workload.output_tokens.tolist()
        self.predicted: list[float] = workload.predicted.tolist()
        self.fallback: list[float] = [] if workload.fallback is None else workload.fallback.tolist()
        self.conversations: list[int] | None = (
            None if workload.conversations is None else workload.conversations.tolist()
        )

    def cache_key(self, i: int) -> int:
        """Row `i`'s prefix-cache key: its conversation's (turns share their prefix), else its own row."""
        return i if self.conversations is None else -1 - self.conversations[i]

    def __call__(self, i: int) -> SimRequest:
        prompt = self.prompt_tokens[i]
        job = Job(self.workload.request_id(i), self.arrival[i], self.predicted[i], prompt)
        request = SimRequest(i, job, prompt, self.output_tokens[i], 0.0, None)
        request.cache_key = self.cache_key(i)
        return request


class EngineRun:
    """The state of one simulation; `loop` drives it, or a `Timeline` drives several (`push` feeds them).

    Arrivals are (submission time, workload row) in time order: the workload's own
    arrivals for one engine, or whatever a pool routes here (`push`). A request's
    `Job.arrival` stays the client's arrival, so latencies count from it.

    Time advances a stretch at a time: `plan` takes what has arrived and decides the
    next stretch (one step with prefill chunks, or decode-only steps through which
    nothing can change), `commit` applies it. Splitting the decision from its effect
    lets a cluster run many engines in one timeline (`lengthwise.sim.cluster`): an
    engine's completions become visible at the end of its stretch, and a request
    pushed in the middle of a decode stretch cuts it short (`replan`), as an arrival
    does in one engine. A cluster shares one `RequestMaker` among its engines and
    hears of finished requests through `on_finish` (else they are kept in `finished`);
    `service` is the estimator completions teach (default the policy's own).
    """

    def __init__(
        self, simulator: Simulator, workload: Workload, progress: Callable[[int], None] | None, *,
        routed: bool = False, requests: RequestMaker | None = None,
        on_finish: Callable[[SimRequest], None] | None = None, service: ServiceTime | None = None,
    ) -> None:  # fmt: skip
        self.config, self.cost, self.workload, self.progress = simulator.config, simulator.cost, workload, progress
        self.scheduler = Scheduler(simulator.config, simulator.policy, record_segments=simulator.record_segments)
        self.batch = self.scheduler.batch
        self.now = 0.0
        self.requests = requests if requests is not None else RequestMaker(workload)
        self.arrival_times: list[float] = [] if routed else list(self.requests.arrival)
        self.arrival_rows: list[int] = [] if routed else list(range(len(workload)))
        self.predicted_tokens = self.requests.predicted
        self.next_arrival = 0
        #: (time, tiebreak, request): real requests sent once their prediction query answered.
        self.delayed_submissions: list[tuple[float, int, SimRequest]] = []
        self._tiebreak = itertools.count()
        self.on_finish = on_finish
        self.finished: list[SimRequest | None] = [None] * len(workload) if on_finish is None else []
        self.service = service if service is not None else simulator.policy.service
        #: The planned stretch: (prefill plan, step seconds, sequences) or (None, decode steps, first step s, growth s).
        self._pending: tuple[Plan, float, int] | tuple[None, int, float, float] | None = None
        self.done = 0
        #: Seconds the engine spent stepping, and running sequences integrated over those seconds.
        self.busy_s = self.seat_s = 0.0
        #: Predicted output tokens of the requests pushed here and not finished (a pool's routing signal).
        self.predicted_outstanding = 0.0

    def loop(self) -> None:
        """Simulate everything the workload sends this engine (its own arrivals: not `routed`)."""
        while True:
            if self.plan() is not None:
                self.commit()
                continue
            arrival = self.next_arrival_time()
            if arrival == math.inf:
                break
            self.now = max(self.now, arrival)
        if self.scheduler.has_waiting():
            raise RuntimeError("simulation stuck: requests wait but none can be admitted")
        if self.progress is not None:
            self.progress(self.done)

    def push(self, time: float, row: int) -> None:
        """A pool routes workload row `row` here, submitted at `time` (not before the last push)."""
        self.arrival_times.append(time)
        self.arrival_rows.append(row)
        self.predicted_outstanding += self.predicted_tokens[row]

    def unfinished(self) -> int:
        """Requests pushed here that have not finished (a pool's queue length)."""
        return len(self.arrival_rows) - self.done

    # ---- arrivals -------------------------------------------------------------------

    def next_arrival_time(self) -> float:
        arrival = self.arrival_times[self.next_arrival] if self.next_arrival < len(self.arrival_times) else math.inf
        return min(arrival, self.delayed_submissions[0][0]) if self.delayed_submissions else arrival

    def take_arrivals(self) -> None:
        now, query, arrivals, count = self.now, self.config.query, self.arrival_times, len(self.arrival_times)
        while self.next_arrival < count and arrivals[self.next_arrival] <= now:
            request = self.requests(self.arrival_rows[self.next_arrival])
            self.next_arrival += 1
            if query is None:
                self.scheduler.submit(request, now)
            elif query.window:  # wait on the cheap prediction until the query window reaches it
                job = request.job
                request.self_predicted, job.predicted_tokens = job.predicted_tokens, self.requests.fallback[request.index]
                self.scheduler.submit(request, now)
            else:
                self.scheduler.add_query(self.scheduler.query_request(request))
        while self.delayed_submissions and self.delayed_submissions[0][0] <= now:
            self.scheduler.submit(heapq.heappop(self.delayed_submissions)[2], now)

    # ---- time ---------------------------------------------------------------------------

    def plan(self) -> float | None:
        """Take what has arrived and decide the next stretch; its end time, or None when nothing runs."""
        self.take_arrivals()
        plan = self.scheduler.schedule(self.now)
        if any(chunk > 0 for _, chunk in plan):
            batch, decoders = self.batch, len(self.batch.requests)
            chunks = [(chunk, request.computed_tokens) for request, chunk in plan if chunk > 0]
            num_tokens = decoders + sum(chunk for chunk, _ in chunks)
            step_s = self.cost.step_time(num_tokens, decoders + len(chunks), batch.context_tokens(), chunks)
            self._pending = (plan, step_s, decoders + len(chunks))
            return self.now + step_s
        if self.batch.requests:
            return self.replan()
        self._pending = None
        return None

    def replan(self) -> float:
        """(Re)decide a decode-only stretch: every decoder through as many identical steps as nothing can change.

        It stops at the first step that reaches the next arrival when that arrival
        could be admitted; called again after a request is pushed mid-stretch, it cuts
        the stretch there. Returns the stretch's end time.
        """
        batch, config = self.batch, self.config
        steps = 1 if self.scheduler.admission_blocked else batch.next_event_step() - batch.steps
        decoders = len(batch.requests)
        base, slope = self.cost.decode_affine(decoders)
        first_step_s, growth_s = base + slope * batch.context_tokens(), slope * decoders
        arrival = self.next_arrival_time()
        seats_free = self.scheduler.running_count() < config.max_num_seqs
        if arrival < math.inf and (seats_free or (config.preemptive and config.preempt_threshold < math.inf)
                                   or config.preempt is not None):
            steps = min(steps, _steps_to_reach(first_step_s, growth_s, arrival - self.now))
        gateway = self.scheduler.gateway
        if gateway is not None and self.scheduler.has_waiting():  # the gateway checks every check_every tokens
            steps = min(steps, max(gateway.steps_to_check(batch), 1))
        steps = batch.steps_that_fit(steps, config.num_blocks)
        self._pending = (None, steps, first_step_s, growth_s)
        return self.now + steps * first_step_s + growth_s * steps * (steps - 1) / 2

    @property
    def decoding(self) -> bool:
        """The planned stretch is decode-only (so a request pushed now can cut it short)."""
        return self._pending is not None and self._pending[0] is None

    def commit(self) -> None:
        """Apply the planned stretch: advance the clock, retire what finished."""
        pending, self._pending = self._pending, None
        assert pending is not None, "commit without a plan"
        if pending[0] is None:
            _, steps, first_step_s, growth_s = pending
            self.advance_clock(steps * first_step_s + growth_s * steps * (steps - 1) / 2, len(self.batch.requests))
            self.batch.steps += steps
            self.after_steps(trimmed=False)
        else:
            self.step(*pending)

    def step(self, plan: Plan, step_s: float, sequences: int) -> None:
        """One engine step with prefill chunks."""
        batch = self.batch
        self.advance_clock(step_s, sequences)
        batch.steps += 1
        for request, chunk in plan:
            request.computed_tokens += chunk
        self.scheduler.trim_cache()
        gateway = self.scheduler.gateway
        for request in self.scheduler.take_prefilled():
            if gateway is not None and request.generated_tokens:  # a resume: from its admission to its next token
                gateway.resume_cost.observe(self.now - request.run_start_time)
            request.generated_tokens += 1
            if request.first_token_time is None:
                request.first_token_time = self.now
            if request.generated_tokens >= request.output_tokens:
                self.finish(request, request.prefill_target)
            else:
                batch.add(request)  # an expired quantum fires at once, in after_steps
        self.after_steps(trimmed=True)

    def advance_clock(self, seconds: float, sequences: int) -> None:
        self.now += seconds
        self.busy_s += seconds
        self.seat_s += seconds * sequences

    def after_steps(self, trimmed: bool) -> None:
        """Retire requests and expire quanta that reached this step; keep the cache within free space.

        The cache is trimmed at the peak of KV use, before anything is freed (unless
        the caller just did), so eviction is as eager as vLLM's.
        """
        scheduler = self.scheduler
        if not trimmed:
            scheduler.trim_cache()
        finished, out_of_quantum = self.batch.pop_due()
        for request in finished:
            self.finish(request, request.prompt_tokens + request.output_tokens - 1)
        scheduler.expired_quanta += out_of_quantum
        scheduler.trim_cache()

    def finish(self, request: SimRequest, kv_tokens: int) -> None:
        request.generated_tokens = request.output_tokens
        request.finish_time = self.now
        self.scheduler.release(request, kv_tokens, self.now)
        if (real := request.query_for) is not None:
            if real.self_predicted is not None:  # the window rule: the query's answer replaces the fallback
                real.job.predicted_tokens, real.self_predicted = real.self_predicted, None
            delay = self.config.query.delay_s if self.config.query else 0.0
            heapq.heappush(self.delayed_submissions, (self.now + delay, next(self._tiebreak), request.query_for))
            return
        request.job.payload = None  # the job <-> request cycle broken: reference counting frees both
        self.predicted_outstanding -= self.predicted_tokens[request.index]
        if (service := self.service) is not None:  # what the gateway sees: times from admission
            assert request.first_token_time is not None and request.scheduled_time is not None
            service.observe(request.prompt_tokens, request.cached_tokens or 0, request.output_tokens,
                            request.first_token_time - request.scheduled_time, self.now - request.scheduled_time,
                            self.scheduler.running_count() + 1)
        self.done += 1
        if self.on_finish is not None:
            self.on_finish(request)
        else:
            self.finished[request.index] = request
        if self.progress is not None and self.done % 1000 == 0:
            self.progress(self.done)

    def result(self, wall_s: float) -> SimResult:
        workload, scheduler = self.workload, self.scheduler
        ideal = self.cost.ideal_latency(workload.prompt_tokens, workload.output_tokens, self.config.max_num_batched_tokens)
        records = []
        for i, request in enumerate(self.finished):
            assert request is not None, f"request {i} never finished"
            records.append(request_record(request, float(workload.predicted[i]), float(ideal[i])))
        resumes = ResumeStats(scheduler.prefill_tokens, scheduler.resume_tokens, scheduler.resume_cached_tokens,
                              scheduler.resume_computed_tokens)
        return SimResult(
            records, self.batch.steps, scheduler.preemptions, scheduler.prefix_cache.stats,
            scheduler.query_prefix_reuse(), resumes, wall_s, scheduler.segments,
        )


def request_record(request: SimRequest, predicted: float, ideal_s: float) -> RequestRecord:
    """A finished request as the metrics read it."""
    return RequestRecord(
        id=request.job.id, arrival=request.job.arrival, first_token_time=request.first_token_time,
        finish_time=request.finish_time, prompt_tokens=request.prompt_tokens, output_tokens=request.output_tokens,
        predicted_tokens=predicted, cached_tokens=request.cached_tokens, scheduled_time=request.scheduled_time,
        ideal_s=ideal_s,
    )  # fmt: skip


def _steps_to_reach(a: float, b: float, delta: float) -> int:
    """Smallest k >= 1 with a·k + b·k(k−1)/2 >= delta (steps of a, a+b, a+2b, ...)."""
    if delta <= a:
        return 1
    if b <= 0:
        k = math.ceil(delta / a)
    else:
        k = math.ceil((-(a - b / 2) + math.sqrt((a - b / 2) ** 2 + 2 * b * delta)) / b)
    k = max(k, 1)
    while k > 1 and a * (k - 1) + b * (k - 1) * (k - 2) / 2 >= delta:
        k -= 1
    while a * k + b * k * (k - 1) / 2 < delta:
        k += 1
    return k
