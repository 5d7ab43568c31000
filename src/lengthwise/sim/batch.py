"""The decode batch: requests that generate one token per engine step, and the KV blocks they hold.

Between events a decoding request's context grows by one token per step, so
instead of each context the batch keeps its offset from the step count: before
step `steps` a request's context is `context_offset + steps`. It then holds
ceil(context / block_size) blocks = (y + steps) // block_size with
y = context_offset + block_size − 1; splitting y = block_size·base + phase makes
the sum over the batch Σbase + n·(steps // block_size) + #{phase ≥ block_size − steps % block_size},
which a histogram of phases answers in O(block_size), however many steps ahead.

Each decoding request also has one event in a heap: the step at which it
finishes or its policy quantum runs out. Leaving the batch bumps its epoch,
which voids that event.
"""

from __future__ import annotations

import heapq
import itertools
import math

from lengthwise.sim.request import SimRequest


class DecodeBatch:
    """The decoding requests in admission order, their total context and KV blocks, their next events."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        #: Engine steps taken so far: the clock that decode positions count from.
        self.steps = 0
        #: An insertion-ordered set (dict keys), so preemption ties break as they always have.
        #: Read directly (`len`, `in`) rather than through methods: this is the hot loop.
        self.requests: dict[SimRequest, None] = {}
        self.sum_context_offsets = 0
        self.sum_block_bases = 0
        self.phase_counts = [0] * block_size
        #: (step, tiebreak, decode_epoch, request): when a request finishes or its quantum ends.
        self._events: list[tuple[int, int, int, SimRequest]] = []
        self._tiebreak = itertools.count()

    def add(self, request: SimRequest) -> None:
        """`request` has generated `generated_tokens` so far; from now on it decodes one per step."""
        offset = request.prompt_tokens + request.generated_tokens - self.steps
        request.context_offset = offset
        request.block_base, request.block_phase = divmod(offset + self.block_size - 1, self.block_size)
        self.sum_context_offsets += offset
        self.sum_block_bases += request.block_base
        self.phase_counts[request.block_phase] += 1
        self.requests[request] = None
        event_step = self.steps + request.output_tokens - request.generated_tokens
        if request.quantum_end_tokens < math.inf:
            quantum_left = max(math.ceil(request.quantum_end_tokens) - request.generated_tokens, 0)
            event_step = min(event_step, self.steps + quantum_left)
        heapq.heappush(self._events, (event_step, next(self._tiebreak), request.decode_epoch, request))

    def remove(self, request: SimRequest) -> None:
        """`request` leaves the batch; its `generated_tokens` is brought up to date."""
        request.generated_tokens = self.generated_tokens(request)
        self.sum_context_offsets -= request.context_offset
        self.sum_block_bases -= request.block_base
        self.phase_counts[request.block_phase] -= 1
        del self.requests[request]
        request.decode_epoch += 1

    def generated_tokens(self, request: SimRequest) -> int:
        """Tokens a request in the batch has generated as of now."""
        return request.context_offset + self.steps - request.prompt_tokens

    def context_tokens(self) -> int:
        """The context all decoders attend to in the next step (the cost models' `decode_ctx`)."""
        return self.sum_context_offsets + len(self.requests) * self.steps

    def blocks_needed(self, steps: int) -> int:
        """KV blocks the decoders hold in the step that starts after `steps` steps."""
        if not self.requests:
            return 0
        full_blocks, within_block = divmod(steps, self.block_size)
        crossed = sum(self.phase_counts[self.block_size - within_block :]) if within_block else 0
        return self.sum_block_bases + len(self.requests) * full_blocks + crossed

    def steps_that_fit(self, max_steps: int, num_blocks: int) -> int:
        """How many of the next `max_steps` decode steps fit in `num_blocks` (at least 1: the next was checked)."""
        n = len(self.requests)
        if (self.sum_context_offsets + n * (self.steps + max_steps)) // self.block_size + n <= num_blocks:
            return max_steps  # a cheap upper bound on the blocks already fits
        fitting, candidate = 1, max_steps  # blocks_needed(steps + fitting - 1) fits; bisect for the most
        if self.blocks_needed(self.steps + candidate - 1) <= num_blocks:
            return candidate
        while fitting < candidate:
            middle = (fitting + candidate + 1) // 2
            if self.blocks_needed(self.steps + middle - 1) <= num_blocks:
                fitting = middle
            else:
                candidate = middle - 1
        return fitting

    def next_event_step(self) -> int:
        """The step of the earliest live event (the batch must not be empty)."""
        events = self._events
        while events[0][2] != events[0][3].decode_epoch:
            heapq.heappop(events)
        return events[0][0]

    def pop_due(self) -> tuple[list[SimRequest], list[SimRequest]]:
        """Requests whose event step has come: those done, removed from the batch, and those out of quantum."""
        events, steps, finished, out_of_quantum = self._events, self.steps, [], []
        while events and events[0][0] <= steps:
            _, _, epoch, request = heapq.heappop(events)
            if epoch != request.decode_epoch:
                continue
            if request.context_offset + steps - request.prompt_tokens >= request.output_tokens:  # all generated
                self.remove(request)
                finished.append(request)
            else:
                out_of_quantum.append(request)
        return finished, out_of_quantum
