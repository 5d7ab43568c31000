"""The scheduler: vLLM v1's decisions each step, over a waiting queue, the running requests and the KV cache.

Each step (`schedule`) it (1) schedules every running request: a decode token
each, then prefill chunks within the token budget (`max_num_batched_tokens`);
(2) if the KV cache cannot hold the step, preempts the running request with the
largest (priority, arrival) and recomputes it later (vLLM's recompute
preemption; its blocks stay in the prefix cache); (3) if nothing was preempted,
admits waiting requests in policy order while a sequence slot, budget and KV
space remain, stopping at the first that does not fit (no skipping ahead, as
vLLM). A request is never preempted for a more urgent one unless `preemptive` is set.

The waiting queue is `lengthwise.core.policy.WaitingQueue` with the policy under
test: the same code the gateway runs. A policy whose keys move with time (HRRN,
a max-wait bound) is therefore re-ranked at each admission, as the gateway's own
queue does; a static vLLM priority could not do that. Prediction queries wait
apart, first in first out, ahead of every request.

Preemptive engines (`preemptive=True`, SGLang-style): a running request whose
policy quantum (RR, MLFQ) runs out yields to the best waiting request if that
one's key is no worse than its own; and a new arrival whose key plus
`preempt_threshold` is no worse than the worst running key takes its place.
Preempted requests are recomputed (their prefix mostly comes back from the cache).

The gateway's preemption (`preempt` set, `lengthwise.sim.gateway_preempt`): while every
seat is taken, the decoding request with the largest re-predicted key yields to the queue's
head when the gateway's rule says so; it is resumed (recomputed) in the same way. Every
admission after a preemption is a resume: its prefill tokens and their cached share are counted.
"""

from __future__ import annotations

import math
from collections import deque

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.queue import WaitingQueue
from lengthwise.sim.batch import DecodeBatch
from lengthwise.sim.config import EngineConfig
from lengthwise.sim.gateway_preempt import GatewayPreemption
from lengthwise.sim.kv import PrefixCache, blocks_for
from lengthwise.sim.request import SimRequest

#: (request, prefill tokens it computes this step); decoders are not listed.
Plan = list[tuple[SimRequest, int]]


class Scheduler:
    """Who runs in the next step: admission, preemption and the prefill chunks."""

    def __init__(self, config: EngineConfig, policy: Policy, *, record_segments: bool = False) -> None:
        self.config, self.policy = config, policy
        self.block_size, self.num_blocks = config.block_size, config.num_blocks
        self.waiting = WaitingQueue(policy)
        #: The query window rule (`QueryConfig.window`): how many of the best waiting requests
        #: are queried, those whose query is under way, and those queried and waiting to be admitted.
        self.window = config.query.window if config.query else 0
        self.window_querying = 0
        self.ready = WaitingQueue(policy)
        self.queries: deque[SimRequest] = deque()
        self.prefilling: list[SimRequest] = []
        self.batch = DecodeBatch(config.block_size)
        self.prefix_cache = PrefixCache(config.block_size, config.prefix_caching)
        #: Requests that took a running one's seat: admitted first in this step, out of queue order.
        self.forced_admissions: list[SimRequest] = []
        #: Decoders whose policy quantum ran out, to yield or go on at the next `schedule`.
        self.expired_quanta: list[SimRequest] = []
        #: Something arrived since arrivals last had the chance to preempt.
        self.new_arrivals = False
        #: The last step preempted for KV space, so it admitted nothing (vLLM's rule).
        self.admission_blocked = False
        self.preemptions = 0
        self.gateway = None if config.preempt is None else GatewayPreemption(config.preempt, policy, config.max_tokens)
        #: Prefill tokens computed (every admission), and of resumes after a preemption: tokens
        #: re-sent (prompt + generated), those the prefix cache had and those computed again.
        self.prefill_tokens = self.resume_tokens = self.resume_cached_tokens = self.resume_computed_tokens = 0
        self.record_segments = record_segments
        #: (request id, start, end) of every stretch a request ran, with `record_segments`.
        self.segments: list[tuple[str, float, float]] = []
        #: Prompt tokens a prediction query could leave cached for its request, and those found.
        self.query_prefix_tokens_possible = self.query_prefix_tokens_found = 0

    # ---- the queues ---------------------------------------------------------------------

    def submit(self, request: SimRequest, now: float) -> None:
        request.priority = self.policy.key(request.job, now)
        queue = self._queue_of(request)
        if queue is self.ready and request.never_admitted:
            self.window_querying -= 1  # its query has answered
        queue.add(request.job, now)
        self.new_arrivals = True

    def _queue_of(self, request: SimRequest) -> WaitingQueue:
        """Where a real request waits: with the window rule, once queried, among the queried."""
        return self.ready if self.window and request.self_predicted is None else self.waiting

    def query_request(self, request: SimRequest) -> SimRequest:
        """The prediction query for `request`: its prompt plus the postfix, at top priority."""
        assert self.config.query is not None
        job = Job("q:" + request.job.id, request.job.arrival, 0.0, request.prompt_tokens + self.config.query.postfix_tokens)
        query = SimRequest(request.index, job, job.prompt_tokens, self.config.query.output_tokens, -math.inf, request)
        query.cache_key = request.cache_key  # its prompt is the request's: one prefix
        return query

    def add_query(self, query: SimRequest) -> None:
        self.queries.append(query)
        self.new_arrivals = True

    def _query_the_window(self, now: float) -> None:
        """Keep the `window` best waiting requests queried or being queried (the eviction-window rule)."""
        while self.window_querying + len(self.ready) < self.window and len(self.waiting):
            job = self.waiting.pop(now)
            assert job is not None
            self.window_querying += 1
            self.add_query(self.query_request(job.payload))

    def has_waiting(self) -> bool:
        return bool(len(self.waiting) or len(self.ready) or self.queries)

    def running(self) -> list[SimRequest]:
        return [*self.batch.requests, *self.prefilling]

    def running_count(self) -> int:
        return len(self.batch.requests) + len(self.prefilling)

    def head(self, now: float) -> SimRequest | None:
        """The next request to admit: a prediction query first, else the policy's best."""
        if self.queries:
            return self.queries[0]
        job = (self.ready if self.window else self.waiting).peek(now)
        return None if job is None else job.payload

    def current_key(self, request: SimRequest, now: float) -> float:
        if request.query_for is not None:
            return -math.inf
        if request in self.batch.requests:
            request.job.generated_tokens = self.batch.generated_tokens(request)
        return self.policy.key(request.job, now)

    # ---- the step's decisions -----------------------------------------------------------

    def schedule(self, now: float) -> Plan:
        """This step's prefill chunks: preempt by policy, fit the running requests in KV, then admit."""
        if self.config.preemptive:
            if self.expired_quanta:
                self._yield_expired_quanta(now)
            if self.new_arrivals and self.config.preempt_threshold < math.inf:
                self._preempt_for_arrivals(now)
        elif self.gateway is not None and (self.new_arrivals or self.gateway.due(self.batch)):
            self._preempt_for_gateway(now)
        if self.window:
            self._query_the_window(now)
        preemptions_before = self.preemptions
        plan, token_budget, blocks_needed = self._fit_running(now)
        self.admission_blocked = self.preemptions > preemptions_before  # vLLM admits nothing then
        if not self.admission_blocked:
            self._admit_waiting(plan, token_budget, blocks_needed, now)
        self._requeue_forced(now)
        return plan

    def _fit_running(self, now: float) -> tuple[Plan, int, int]:
        """A token for every decoder and prefill chunks within the budget, preempting until KV holds them.

        Returns the plan, the token budget left and the KV blocks the step needs.
        """
        batch, block_size = self.batch, self.block_size
        while True:
            token_budget = self.config.max_num_batched_tokens - len(batch.requests)
            blocks_needed = batch.blocks_needed(batch.steps)
            plan = []
            for request in self.prefilling:
                chunk = min(request.prefill_target - request.computed_tokens, token_budget)
                token_budget -= chunk
                blocks_needed += blocks_for(request.computed_tokens + chunk, block_size)
                plan.append((request, chunk))
            if blocks_needed <= self.num_blocks:
                return plan, token_budget, blocks_needed
            victim = max(self.running(), key=lambda r: (r.priority, r.job.arrival))
            self.preempt(victim, now)

    def _admit_waiting(self, plan: Plan, token_budget: int, blocks_needed: int, now: float) -> None:
        """Admit forced requests, then the queue's head, while a seat, budget and KV space remain."""
        block_size = self.block_size
        seats = self.config.max_num_seqs - len(self.batch.requests) - len(self.prefilling)
        while seats > 0 and token_budget > 0:
            forced = bool(self.forced_admissions)
            request = self.forced_admissions[0] if forced else self.head(now)
            if request is None:
                break
            hit_tokens = self.prefix_cache.peek(request.cache_key, request.prefill_target) * block_size
            if self.config.remote_prefill and request.never_admitted:
                hit_tokens = request.prefill_target - 1  # the prompt's KV came from a prefill instance
            chunk = min(request.prefill_target - hit_tokens, token_budget)
            blocks = blocks_for(hit_tokens + chunk, block_size)
            if blocks_needed + blocks > self.num_blocks:
                break  # no skipping ahead
            if forced:
                self.forced_admissions.pop(0)
            elif request.query_for is not None:
                self.queries.popleft()
            else:
                self._queue_of(request).pop(now)
            self.prefix_cache.take(request.cache_key, request.prefill_target)
            self._admit(request, hit_tokens, now)
            plan.append((request, chunk))
            blocks_needed += blocks
            token_budget -= chunk
            seats -= 1

    def _admit(self, request: SimRequest, hit_tokens: int, now: float) -> None:
        request.computed_tokens = hit_tokens
        self.prefill_tokens += request.prefill_target - hit_tokens
        if not request.never_admitted:
            self.resume_tokens += request.prefill_target
            self.resume_cached_tokens += hit_tokens
            self.resume_computed_tokens += request.prefill_target - hit_tokens
        if request.never_admitted:
            request.never_admitted = False
            request.scheduled_time, request.cached_tokens = now, hit_tokens
            if request.query_for is None and self.config.query is not None:
                self.query_prefix_tokens_possible += (request.prompt_tokens - 1) // self.block_size * self.block_size
                self.query_prefix_tokens_found += hit_tokens
        request.run_start_time = now
        self._set_quantum(request)
        self.prefilling.append(request)

    def _set_quantum(self, request: SimRequest) -> None:
        if self.config.preemptive and request.query_for is None:
            request.job.generated_tokens = request.generated_tokens
            quantum = self.policy.quantum(request.job)
            request.quantum_end_tokens = math.inf if quantum is None else request.generated_tokens + quantum

    # ---- preemption ---------------------------------------------------------------------

    def preempt(self, request: SimRequest, now: float) -> None:
        """Recompute later: free the request's blocks into the prefix cache and queue it again."""
        if request in self.prefilling:
            self.prefilling.remove(request)
            kv_tokens = request.computed_tokens
        else:
            self.batch.remove(request)
            kv_tokens = request.prompt_tokens + request.generated_tokens - 1
        self.release(request, kv_tokens, now)
        request.prefill_target = request.prompt_tokens + request.generated_tokens
        request.computed_tokens = 0
        request.job.generated_tokens = request.generated_tokens
        request.job.last_run = now
        self.preemptions += 1
        if request.query_for is not None:
            self.queries.appendleft(request)
        else:
            self._queue_of(request).add(request.job, now)

    def release(self, request: SimRequest, kv_tokens: int, now: float) -> None:
        """The request stops running: its full blocks go to the prefix cache (a query's: only the shared prompt)."""
        real = request.query_for
        self.prefix_cache.put(request.cache_key, kv_tokens if real is None else min(kv_tokens, real.prompt_tokens))
        if self.record_segments:
            self.segments.append((request.job.id, request.run_start_time, now))

    def _yield_expired_quanta(self, now: float) -> None:
        """A decoder whose quantum ran out yields to a waiting request no worse than itself, else goes on."""
        expired, self.expired_quanta = self.expired_quanta, []
        for request in expired:
            if request not in self.batch.requests:
                continue
            own_key = self.current_key(request, now)
            head = self.head(now)
            if head is not None and self.current_key(head, now) <= own_key:
                self.preempt(request, now)
                self._force(head)
            else:
                self.batch.remove(request)
                self._set_quantum(request)
                self.batch.add(request)

    def _preempt_for_arrivals(self, now: float) -> None:
        """SGLang-style: a new arrival no worse than the worst running key + threshold takes its seat."""
        self.new_arrivals = False
        threshold = self.config.preempt_threshold
        while self.running_count() + len(self.forced_admissions) >= self.config.max_num_seqs:
            head, running = self.head(now), self.running()
            if head is None or not head.never_admitted or head in self.forced_admissions or not running:
                return
            worst = max(running, key=lambda r: (self.current_key(r, now), r.job.arrival))
            if self.current_key(head, now) + threshold > self.current_key(worst, now):
                return
            self.preempt(worst, now)
            self._force(head)

    def _preempt_for_gateway(self, now: float) -> None:
        """While every seat is taken, the gateway's choice among the decoders yields to the queue's head."""
        self.new_arrivals = False
        assert self.gateway is not None
        while self.running_count() + len(self.forced_admissions) >= self.config.max_num_seqs:
            head = self.head(now)
            if head is None or head.query_for is not None:
                return
            victim = self.gateway.victim(self.batch, head, now)
            if victim is None:
                return
            self.preempt(victim, now)
            self._force(head)

    def _force(self, request: SimRequest) -> None:
        """Admit the request first in this step (it took someone's place), out of queue order."""
        if request.query_for is not None:
            self.queries.remove(request)
        else:
            self.waiting.remove(request.job.id)
        self.forced_admissions.append(request)

    def _requeue_forced(self, now: float) -> None:
        """Forced admissions that did not fit after all go back in line."""
        for request in self.forced_admissions:
            if request.query_for is not None:
                self.queries.appendleft(request)
            else:
                self.waiting.add(request.job, now)
        self.forced_admissions.clear()

    # ---- after a step -------------------------------------------------------------------

    def take_prefilled(self) -> list[SimRequest]:
        """Prefills that completed in the step just taken, removed from the running prefills."""
        done = [request for request in self.prefilling if request.computed_tokens >= request.prefill_target]
        for request in done:
            self.prefilling.remove(request)
        return done

    def trim_cache(self) -> None:
        """Keep the prefix cache within the blocks the running requests leave free in the step just taken."""
        held = self.batch.blocks_needed(self.batch.steps - 1)
        if self.prefilling:
            held += sum(blocks_for(request.computed_tokens, self.block_size) for request in self.prefilling)
        self.prefix_cache.trim(self.num_blocks - held)

    def query_prefix_reuse(self) -> float | None:
        """The share of their prompt's full blocks real requests found cached after their query."""
        if self.config.query is None:
            return None
        possible = self.query_prefix_tokens_possible
        return self.query_prefix_tokens_found / possible if possible else 0.0
