"""From a policy key (lower is served first) to each engine's `priority` field.

vLLM serves lower integers first; SGLang serves higher values first unless started
with `--schedule-low-priority-values-first`; a plain OpenAI server has no such field
(queue mode only). Keys are scaled, rounded and clamped inside ±(BOUND - 1), so that
prediction queries, sent at the most urgent value ±BOUND, always go first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lengthwise.gateway.config import GatewayConfig

#: int32-safe: every engine parses it.
BOUND = 2**31 - 1


@dataclass(frozen=True)
class PriorityMap:
    low_first: bool = True
    scale: float = 1.0

    @classmethod
    def for_config(cls, config: GatewayConfig) -> PriorityMap | None:
        """The engine's mapping; None for an engine without priorities."""
        if config.engine == "openai":
            return None
        low_first = config.engine == "vllm" or config.sglang_low_first
        return cls(low_first=low_first, scale=config.priority_scale)

    def __call__(self, key: float) -> int:
        """The engine priority of a request whose policy key is `key`."""
        scaled = key * self.scale
        value = BOUND - 1 if math.isnan(scaled) else int(round(max(-(BOUND - 1), min(BOUND - 1, scaled))))
        return value if self.low_first else -value

    @property
    def urgent(self) -> int:
        """The priority of prediction queries: ahead of every real request."""
        return -BOUND if self.low_first else BOUND
