"""The engine model: continuous batching with vLLM v1's scheduler semantics, step by step.

Each step the engine (1) schedules every running request: a decode token each,
then prefill chunks within the token budget (`max_num_batched_tokens`); (2) if
the KV cache cannot hold the step, preempts the running request with the largest
(priority, arrival) and recomputes it later (vLLM's recompute preemption; its
blocks stay in the prefix cache); (3) if nothing was preempted, admits waiting
requests in policy order while a sequence slot, budget and KV space remain,
stopping at the first that does not fit (no skipping ahead, as vLLM). A request
is never preempted for a more urgent one unless `preemptive` is set.

The waiting queue is `lengthwise.core.policy.WaitingQueue` with the policy under test:
the same code the gateway runs. A policy whose keys move with time (HRRN, a
max-wait bound) is therefore re-ranked at each admission, as the gateway's own
queue does; a static vLLM priority could not do that.

Preemptive engines (`preemptive=True`, SGLang-style): a running request whose
policy quantum (RR, MLFQ) runs out yields to the best waiting request if that one's
key is no worse than its own; and a new arrival whose key plus
`preempt_threshold` is no worse than the worst running key takes its place.
Preempted requests are recomputed (their prefix mostly comes back from the cache).

Speed: decode-only stretches in which nothing can change (no arrival that could
be admitted, no completion, no quantum expiry, KV space enough) are advanced in
one go with the cost model's affine decode time, so the work is per event, not
per token. Block counts of decoding requests are kept exactly in O(block_size)
from a histogram of their positions within a block.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lengthwise.core.records import RequestRecord
from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.sim.cost import CostModel
from lengthwise.sim.kv import CacheStats, PrefixCache
from lengthwise.sim.workload import Workload


@dataclass(frozen=True)
class QueryConfig:
    """The self-prediction query sent ahead of each request, at top priority.

    It prefills the prompt plus the postfix and decodes a few tokens; the real
    request is sent `delay_s` after its answer and reuses the prompt's full blocks
    if they are still cached.
    """

    postfix_tokens: int = 60
    output_tokens: int = 4
    delay_s: float = 0.0


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size: int = 16
    num_blocks: int = 50_000
    prefix_caching: bool = True
    preemptive: bool = False
    preempt_threshold: float = math.inf
    query: QueryConfig | None = None

    def __post_init__(self) -> None:
        if min(self.max_num_seqs, self.block_size, self.num_blocks) < 1:
            raise ValueError("max_num_seqs, block_size and num_blocks must be >= 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}) so every running request decodes each step"
            )
        if self.preempt_threshold < 0:
            raise ValueError("preempt_threshold must be >= 0")


@dataclass
class SimResult:
    records: list[RequestRecord]
    steps: int
    preemptions: int
    cache: CacheStats
    #: Of the prompt tokens a prediction query could leave cached (its prompt's full
    #: blocks), the share the real request found: the seed's prefix-reuse constraint.
    query_prefix_reuse: float | None
    wall_s: float
    #: (request id, start, end) of every stretch a request ran, with `record_segments`.
    segments: list[tuple[str, float, float]] = field(default_factory=list)

    def stats(self) -> dict[str, float]:
        out = {
            "sim_steps": self.steps,
            "preemptions": self.preemptions,
            "engine_prefix_cache_hit_rate": self.cache.hit_rate,
            "sim_wall_s": self.wall_s,
            "sim_requests_per_s": len(self.records) / self.wall_s if self.wall_s > 0 else 0.0,
        }
        if self.query_prefix_reuse is not None:
            out["query_prefix_reuse"] = self.query_prefix_reuse
        return out


class _Req:
    """One sequence in the engine: a real request or its prediction query."""

    __slots__ = (
        "idx", "job", "prompt", "output", "key", "prio", "query_for", "target", "computed", "generated",
        "x", "q", "s", "epoch", "first_token", "sched", "cached", "fresh", "q_end", "run_start", "finished_at",
    )  # fmt: skip

    def __init__(self, idx: int, job: Job, prompt: int, output: int, prio: float, query_for: _Req | None) -> None:
        self.idx, self.job, self.prompt, self.output, self.prio = idx, job, prompt, output, prio
        self.key = idx  # the prefix-cache key: a request, its query and its recomputation share it
        self.query_for = query_for
        self.target = prompt  # tokens to prefill before the next token
        self.computed = 0
        self.generated = 0
        self.x = self.q = self.s = 0  # decode bookkeeping, see _Run.add_decoder
        self.epoch = 0
        self.first_token: float | None = None
        self.sched: float | None = None
        self.cached: int | None = None
        self.fresh = True
        self.q_end: float = math.inf
        self.run_start = 0.0
        self.finished_at = 0.0
        job.payload = self


class Simulator:
    """Runs a workload through the engine model under one policy."""

    def __init__(self, config: EngineConfig, cost: CostModel, policy: Policy, *, record_segments: bool = False) -> None:
        self.config, self.cost, self.policy = config, cost, policy
        self.record_segments = record_segments

    def run(self, workload: Workload, progress: Callable[[int], None] | None = None) -> SimResult:
        """Simulate every request to completion; `progress(n_done)` is called now and then."""
        limit = self.config.num_blocks * self.config.block_size
        extra = self.config.query.postfix_tokens if self.config.query else 0
        too_big = np.flatnonzero(workload.prompt_tokens + np.maximum(workload.output_tokens, extra) > limit)
        if too_big.size:
            raise ValueError(
                f"{too_big.size} requests need more KV than the engine has ({limit} tokens), "
                f"e.g. {workload.request_id(int(too_big[0]))}"
            )
        started = time.perf_counter()
        run = _Run(self, workload, progress)
        run.loop()
        return run.result(time.perf_counter() - started)


class _Run:
    """The state of one simulation; `loop` drives it."""

    def __init__(self, sim: Simulator, w: Workload, progress: Callable[[int], None] | None) -> None:
        cfg = sim.config
        self.sim, self.cfg, self.cost, self.policy, self.w = sim, cfg, sim.cost, sim.policy, w
        self.progress = progress
        self.bs, self.total = cfg.block_size, cfg.num_blocks
        self.now, self.D = 0.0, 0
        self.waiting = WaitingQueue(sim.policy)
        self.queries: deque[_Req] = deque()
        self.prefilling: list[_Req] = []
        self.decoders: dict[int, _Req] = {}
        self.sum_x = self.sum_q = 0
        self.cnt = [0] * self.bs
        self.events: list[tuple[int, int, int, _Req]] = []
        self.expired: list[_Req] = []
        self.forced: list[_Req] = []
        self.seq = itertools.count()
        self.cache = PrefixCache(self.bs, cfg.prefix_caching)
        self.next_arrival = 0
        # Python lists: element access on numpy arrays is slow in the hot loop.
        self.arrivals: list[float] = w.arrival.tolist()
        self.prompts: list[int] = w.prompt_tokens.tolist()
        self.outputs: list[int] = w.output_tokens.tolist()
        self.predicted: list[float] = w.predicted.tolist()
        self.submissions: list[tuple[float, int, _Req]] = []
        self.fresh_arrivals = False
        self.admission_blocked = False
        self.preemptions = 0
        self.done = 0
        self.finished: list[_Req | None] = [None] * len(w)
        self.reuse_possible = self.reuse_found = 0
        self.segments: list[tuple[str, float, float]] = []

    # ---- arrivals -------------------------------------------------------------------

    def next_arrival_time(self) -> float:
        t = self.arrivals[self.next_arrival] if self.next_arrival < len(self.arrivals) else math.inf
        return min(t, self.submissions[0][0]) if self.submissions else t

    def take_arrivals(self) -> None:
        now, query, arrivals, n = self.now, self.cfg.query, self.arrivals, len(self.arrivals)
        while self.next_arrival < n and arrivals[self.next_arrival] <= now:
            i = self.next_arrival
            self.next_arrival += 1
            job = Job(self.w.request_id(i), arrivals[i], self.predicted[i], self.prompts[i])
            req = _Req(i, job, self.prompts[i], self.outputs[i], 0.0, None)
            if query is None:
                self.submit(req)
            else:
                qjob = Job("q:" + job.id, job.arrival, 0.0, req.prompt + query.postfix_tokens)
                self.queries.append(_Req(i, qjob, qjob.prompt_tokens, query.output_tokens, -math.inf, req))
                self.fresh_arrivals = True
        while self.submissions and self.submissions[0][0] <= now:
            self.submit(heapq.heappop(self.submissions)[2])

    def submit(self, req: _Req) -> None:
        req.prio = self.policy.key(req.job, self.now)
        self.waiting.add(req.job, self.now)
        self.fresh_arrivals = True

    # ---- decode bookkeeping -----------------------------------------------------------

    def add_decoder(self, r: _Req) -> None:
        """r has generated r.generated tokens as of step D; it decodes one per step from now on.

        Its context before step D' is x + D' with x = prompt + generated − D, and it
        needs ceil((x + D')/bs) blocks then: (y + D') // bs with y = x + bs − 1, split
        as y = bs·q + s so the sum over decoders is Σq + n·(D' // bs) + #{s ≥ bs − D' % bs}.
        """
        r.x = r.prompt + r.generated - self.D
        r.q, r.s = divmod(r.x + self.bs - 1, self.bs)
        self.sum_x += r.x
        self.sum_q += r.q
        self.cnt[r.s] += 1
        self.decoders[r.idx if r.query_for is None else ~r.idx] = r
        end = self.D + r.output - r.generated
        if r.q_end < math.inf:
            end = min(end, self.D + max(int(math.ceil(r.q_end)) - r.generated, 0))
        heapq.heappush(self.events, (end, next(self.seq), r.epoch, r))

    def remove_decoder(self, r: _Req) -> None:
        r.generated = r.x + self.D - r.prompt
        self.sum_x -= r.x
        self.sum_q -= r.q
        self.cnt[r.s] -= 1
        del self.decoders[r.idx if r.query_for is None else ~r.idx]
        r.epoch += 1

    def blocks_dec(self, d: int) -> int:
        """KV blocks the decoders need for a step that starts after `d` steps."""
        if not self.decoders:
            return 0
        big, small = divmod(d, self.bs)
        return self.sum_q + len(self.decoders) * big + (sum(self.cnt[self.bs - small :]) if small else 0)

    def running(self) -> list[_Req]:
        return [*self.decoders.values(), *self.prefilling]

    # ---- preemption and admission ---------------------------------------------------------

    def preempt(self, r: _Req) -> None:
        """Recompute later: free r's blocks into the prefix cache and queue it again."""
        if r in self.prefilling:
            self.prefilling.remove(r)
            kv_tokens = r.computed
        else:
            self.remove_decoder(r)
            kv_tokens = r.prompt + r.generated - 1
        self.release(r, kv_tokens)
        r.target, r.computed = r.prompt + r.generated, 0
        r.job.generated_tokens = r.generated
        r.job.last_run = self.now
        self.preemptions += 1
        if r.query_for is not None:
            self.queries.appendleft(r)
        else:
            self.waiting.add(r.job, self.now)

    def release(self, r: _Req, kv_tokens: int) -> None:
        """r stops running: its full blocks go to the prefix cache (a query's: only the shared prompt)."""
        shared = kv_tokens if r.query_for is None else min(kv_tokens, r.query_for.prompt)
        self.cache.put(r.key, shared)
        if self.sim.record_segments:
            self.segments.append((r.job.id, r.run_start, self.now))

    def current_key(self, r: _Req) -> float:
        if r.query_for is not None:
            return -math.inf
        if r.idx in self.decoders:
            r.job.generated_tokens = r.x + self.D - r.prompt
        return self.policy.key(r.job, self.now)

    def head(self) -> _Req | None:
        if self.queries:
            return self.queries[0]
        job = self.waiting.peek(self.now)
        return None if job is None else job.payload

    def yield_expired(self) -> None:
        """Quantum expiries: yield to a waiting request no worse than oneself, else go on."""
        expired, self.expired = self.expired, []
        for r in expired:
            if r.idx not in self.decoders or self.decoders[r.idx] is not r:
                continue
            mine = self.current_key(r)
            h = self.head()
            if h is not None and self.current_key(h) <= mine:
                self.preempt(r)
                self.force(h)
            else:
                self.remove_decoder(r)
                self.set_quantum(r)
                self.add_decoder(r)

    def preempt_for_arrivals(self) -> None:
        """SGLang-style: a new arrival no worse than the worst running key + threshold takes its seat."""
        self.fresh_arrivals = False
        thr = self.cfg.preempt_threshold
        while len(self.decoders) + len(self.prefilling) + len(self.forced) >= self.cfg.max_num_seqs:
            h, running = self.head(), self.running()
            if h is None or not h.fresh or h in self.forced or not running:
                return
            worst = max(running, key=lambda r: (self.current_key(r), r.job.arrival))
            if self.current_key(h) + thr > self.current_key(worst):
                return
            self.preempt(worst)
            self.force(h)

    def force(self, r: _Req) -> None:
        """Admit r first in this step (it took someone's place), out of queue order."""
        if r.query_for is not None:
            self.queries.remove(r)
        else:
            self.waiting.remove(r.job.id)
        self.forced.append(r)

    def set_quantum(self, r: _Req) -> None:
        if self.cfg.preemptive and r.query_for is None:
            r.job.generated_tokens = r.generated
            q = self.policy.quantum(r.job)
            r.q_end = math.inf if q is None else r.generated + q

    def schedule(self) -> list[tuple[_Req, int]]:
        """This step's prefill chunks; preempts on KV exhaustion, then admits if it did not."""
        bs, total = self.bs, self.total
        preempted = False
        while True:
            budget = self.cfg.max_num_batched_tokens - len(self.decoders)
            need = self.blocks_dec(self.D)
            plan = []
            for r in self.prefilling:
                c = min(r.target - r.computed, budget)
                budget -= c
                need += -(-(r.computed + c) // bs)
                plan.append((r, c))
            if need <= total:
                break
            victim = max(self.running(), key=lambda r: (r.prio, r.job.arrival))
            self.preempt(victim)
            preempted = True
        self.admission_blocked = preempted  # vLLM admits nothing in a step that preempted
        if preempted:
            self.requeue_forced()
            return plan
        seats = self.cfg.max_num_seqs - len(self.decoders) - len(self.prefilling)
        while seats > 0 and budget > 0:
            forced = bool(self.forced)
            r = self.forced[0] if forced else self.head()
            if r is None:
                break
            hit = self.cache.peek(r.key, r.target)
            c = min(r.target - hit * bs, budget)
            blocks = -(-(hit * bs + c) // bs)
            if need + blocks > total:
                break
            if forced:
                self.forced.pop(0)
            elif r.query_for is not None:
                self.queries.popleft()
            else:
                self.waiting.pop(self.now)
            self.cache.take(r.key, r.target)
            self.admit(r, hit * bs)
            plan.append((r, c))
            need += blocks
            budget -= c
            seats -= 1
        self.requeue_forced()
        return plan

    def requeue_forced(self) -> None:
        """Forced admissions that did not fit after all go back in line."""
        for r in self.forced:
            if r.query_for is not None:
                self.queries.appendleft(r)
            else:
                self.waiting.add(r.job, self.now)
        self.forced.clear()

    def admit(self, r: _Req, hit_tokens: int) -> None:
        r.computed = hit_tokens
        if r.fresh:
            r.fresh = False
            r.sched, r.cached = self.now, hit_tokens
            if r.query_for is None and self.cfg.query is not None:
                self.reuse_possible += (r.prompt - 1) // self.bs * self.bs
                self.reuse_found += hit_tokens
        r.run_start = self.now
        self.set_quantum(r)
        self.prefilling.append(r)

    # ---- time ---------------------------------------------------------------------------

    def step(self, plan: list[tuple[_Req, int]]) -> None:
        """One engine step with prefill chunks."""
        n = len(self.decoders)
        chunks = [(c, r.computed) for r, c in plan if c > 0]
        num_tokens = n + sum(c for c, _ in chunks)
        dt = self.cost.step_time(num_tokens, n + len(chunks), self.sum_x + n * self.D, chunks)
        self.now += dt
        self.D += 1
        for r, c in plan:
            r.computed += c
        self.trim_cache()
        for r in [r for r in self.prefilling if r.computed >= r.target]:
            self.prefilling.remove(r)
            r.generated += 1
            if r.first_token is None:
                r.first_token = self.now
            if r.generated >= r.output:
                self.finish(r, r.target)
            else:
                self.add_decoder(r)  # an expired quantum fires at once, in after_steps
        self.after_steps(trimmed=True)

    def decode_steps(self) -> None:
        """Advance every decoder through as many identical steps as nothing can change."""
        n, D = len(self.decoders), self.D
        while self.events[0][2] != self.events[0][3].epoch:
            heapq.heappop(self.events)
        k = 1 if self.admission_blocked else self.events[0][0] - D
        base, slope = self.cost.decode_affine(n)
        a, b = base + slope * (self.sum_x + n * D), slope * n
        arrival = self.next_arrival_time()
        seats_free = n + len(self.prefilling) < self.cfg.max_num_seqs
        if arrival < math.inf and (seats_free or (self.cfg.preemptive and self.cfg.preempt_threshold < math.inf)):
            k = min(k, _steps_to_reach(a, b, arrival - self.now))
        if (self.sum_x + n * (D + k)) // self.bs + n > self.total:  # a cheap bound said KV may run out
            k = min(k, self._steps_to_kv_exhaustion(k))
        self.now += k * a + b * k * (k - 1) / 2
        self.D += k
        self.after_steps(trimmed=False)

    def _steps_to_kv_exhaustion(self, k: int) -> int:
        """The number of steps from D that still fit (at least 1: this step was checked)."""
        lo, hi = 1, k  # blocks_dec(D + lo - 1) fits; find the largest fitting count
        if self.blocks_dec(self.D + hi - 1) <= self.total:
            return hi
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.blocks_dec(self.D + mid - 1) <= self.total:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def after_steps(self, trimmed: bool) -> None:
        """Retire requests and expire quanta that reached this step; keep the cache within free space.

        The cache is trimmed at the peak of KV use, before anything is freed (unless
        the caller just did), so eviction is as eager as vLLM's.
        """
        events, D = self.events, self.D
        if not trimmed:
            self.trim_cache()
        while events and events[0][0] <= D:
            _, _, epoch, r = heapq.heappop(events)
            if epoch != r.epoch:
                continue
            generated = r.x + D - r.prompt
            if generated >= r.output:
                self.remove_decoder(r)
                self.finish(r, r.prompt + r.output - 1)
            else:
                self.expired.append(r)
        self.trim_cache()

    def trim_cache(self) -> None:
        """Keep the prefix cache within the blocks running requests leave free."""
        held = self.blocks_dec(self.D - 1) + sum(-(-r.computed // self.bs) for r in self.prefilling)
        self.cache.trim(self.total - held)

    def finish(self, r: _Req, kv_tokens: int) -> None:
        r.generated = r.output
        r.finished_at = self.now
        self.release(r, kv_tokens)
        if r.query_for is not None:
            real = r.query_for
            delay = self.cfg.query.delay_s if self.cfg.query else 0.0
            heapq.heappush(self.submissions, (self.now + delay, next(self.seq), real))
            return
        self.finished[r.idx] = r
        if (service := self.policy.service) is not None:  # what the gateway sees: times from admission
            running = len(self.decoders) + len(self.prefilling) + 1
            service.observe(r.prompt, r.cached or 0, r.output, r.first_token - r.sched, self.now - r.sched, running)
        self.done += 1
        if self.progress is not None and self.done % 1000 == 0:
            self.progress(self.done)

    def loop(self) -> None:
        preemptive = self.cfg.preemptive
        while True:
            self.take_arrivals()
            if preemptive:
                if self.expired:
                    self.yield_expired()
                if self.fresh_arrivals and self.cfg.preempt_threshold < math.inf:
                    self.preempt_for_arrivals()
            plan = self.schedule()
            if any(c > 0 for _, c in plan):
                self.step(plan)
            elif self.decoders:
                self.decode_steps()
            else:
                t = self.next_arrival_time()
                if t == math.inf:
                    if len(self.waiting) or self.queries:
                        raise RuntimeError("simulation stuck: requests wait but none can be admitted")
                    break
                self.now = max(self.now, t)
        if self.progress is not None:
            self.progress(self.done)

    def result(self, wall_s: float) -> SimResult:
        w = self.w
        ideal = self.cost.ideal_latency(w.prompt_tokens, w.output_tokens, self.cfg.max_num_batched_tokens)
        records = []
        for i, r in enumerate(self.finished):
            assert r is not None, f"request {i} never finished"
            records.append(
                RequestRecord(
                    id=r.job.id, arrival=r.job.arrival, first_token_time=r.first_token, finish_time=r.finished_at,
                    prompt_tokens=r.prompt, output_tokens=r.output,
                    predicted_tokens=float(w.predicted[i]), cached_tokens=r.cached, scheduled_time=r.sched,
                    ideal_s=float(ideal[i]),
                )  # fmt: skip
            )
        reuse = self.reuse_found / self.reuse_possible if self.reuse_possible else None
        if self.cfg.query is not None and reuse is None:
            reuse = 0.0
        return SimResult(records, self.D, self.preemptions, self.cache.stats, reuse, wall_s, self.segments)


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
