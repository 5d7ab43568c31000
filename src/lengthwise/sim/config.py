"""The simulated engine's settings: vLLM's scheduler limits, KV cache, preemption, prediction query."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lengthwise.core.preempt import PreemptSettings


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
    #: 0: every request is queried on arrival. K >= 1 (the eviction-window rule): requests
    #: wait ordered by the workload's `fallback` (cheap) predictions; only the K best are
    #: queried, and a queried request waits among those K, ordered by its self-prediction,
    #: so its prompt's blocks are still cached when it is admitted.
    window: int = 0

    def __post_init__(self) -> None:
        if self.window < 0:
            raise ValueError(f"query window must be >= 0, got {self.window}")


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
    #: The gateway's preemption in front of the engine (`lengthwise serve --preempt`: abort and
    #: resume as a continuation, `lengthwise.sim.gateway_preempt`); None: the gateway never preempts.
    preempt: PreemptSettings | None = None
    #: The max_tokens clients sent: the cap of the length distributions the gateway's preemption
    #: re-predicts with (None: uncapped, as the gateway assumes for a request that gives none).
    max_tokens: int | None = None
    #: A decode instance of a prefill/decode deployment: a prompt's KV arrives from a
    #: prefill instance, so at its first admission all but the last prompt token are
    #: computed (the decode instance computes that one to emit the first token, as
    #: vLLM's disaggregated serving does); after a preemption it recomputes as usual.
    remote_prefill: bool = False

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
        if (self.preemptive or self.preempt is not None) and self.query is not None and self.query.window:
            raise ValueError("the query window rule is modelled for non-preemptive engines only")
        if self.preemptive and self.preempt is not None:
            raise ValueError("choose one preemption: the engine's own (preemptive) or the gateway's (preempt)")
