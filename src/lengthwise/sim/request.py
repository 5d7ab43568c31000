"""One sequence in the simulated engine: a real request or the prediction query sent ahead of it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lengthwise.core.policy.base import Job

if TYPE_CHECKING:
    from lengthwise.predict.remaining import LengthDistribution


class SimRequest:
    """A sequence's progress through the engine; `job` is what the policy sees (its payload is this)."""

    __slots__ = (
        "block_base", "block_phase", "cache_key", "cached_tokens", "computed_tokens", "context_offset",
        "decode_epoch", "finish_time", "first_token_time", "generated_tokens", "index", "job", "length",
        "never_admitted", "output_tokens", "prefill_target", "preemptions", "priority", "prompt_tokens",
        "quantum_end_tokens", "query_for", "run_start_time", "scheduled_time", "self_predicted",
    )  # fmt: skip

    def __init__(
        self, index: int, job: Job, prompt_tokens: int, output_tokens: int, priority: float,
        query_for: SimRequest | None,
    ) -> None:  # fmt: skip
        #: The workload row; a request and its prediction query share it.
        self.index = index
        self.job = job
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        #: The policy key at submission (a query's: -inf), as vLLM's static priority:
        #: KV exhaustion preempts the running request with the largest (priority, arrival).
        self.priority = priority
        #: For a prediction query, the real request it precedes; None for a real request.
        self.query_for = query_for
        #: Query window rule: the self-prediction its query will give (the job carries the
        #: fallback until then); None once the query has answered, or without the rule.
        self.self_predicted: float | None = None
        #: The prefix-cache key: a request, its query and its recomputation share it.
        self.cache_key = index
        #: Tokens to prefill before the next token: the prompt, or prompt + generated after a preemption.
        self.prefill_target = prompt_tokens
        self.computed_tokens = 0
        #: Tokens generated, up to date whenever the request is not in the decode batch.
        self.generated_tokens = 0
        #: The generated-token count at which its policy quantum runs out (preemptive engines).
        self.quantum_end_tokens = math.inf
        #: Decode-batch bookkeeping (see `DecodeBatch`); `decode_epoch` voids its stale events.
        self.context_offset = self.block_base = self.block_phase = 0
        self.decode_epoch = 0
        self.never_admitted = True
        #: Times the gateway's preemption made it yield, and the length distribution it re-predicts
        #: it with (`lengthwise.sim.gateway_preempt`; None until first needed).
        self.preemptions = 0
        self.length: LengthDistribution | None = None
        #: First admission: when, and how many prompt tokens the prefix cache had.
        self.scheduled_time: float | None = None
        self.cached_tokens: int | None = None
        #: When its current stretch on the engine began (for `SimResult.segments`).
        self.run_start_time = 0.0
        self.first_token_time: float | None = None
        self.finish_time = 0.0
        job.payload = self
