"""What a benchmark run sends and when: prompts paired with arrival times.

A plan is built once from a seed and replayed unchanged by every policy in a
comparison, so that FCFS, LLM-guided and oracle see the same prompts at the same
instants and differ only in how they are scheduled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a plan: `arrival_s` is seconds after the run's start."""

    id: str
    prompt: str
    arrival_s: float
    max_tokens: int
    #: Sent as vLLM's `priority` field when set (lower is served first); the oracle
    #: arm sets it from actual lengths, the other arms leave it to the gateway.
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(prompts: Sequence[str], arrivals: Sequence[float], max_tokens: int) -> list[PlannedRequest]:
    """Pair prompts with arrival offsets; ids are stable (`r0000`, ...) across arms."""
    if len(prompts) != len(arrivals):
        raise ValueError(f"{len(prompts)} prompts but {len(arrivals)} arrival times")
    return [
        PlannedRequest(id=f"r{i:04d}", prompt=p, arrival_s=float(t), max_tokens=max_tokens)
        for i, (p, t) in enumerate(zip(prompts, arrivals, strict=True))
    ]


def with_priorities(plan: Sequence[PlannedRequest], priorities: dict[str, int]) -> list[PlannedRequest]:
    """The same plan with vLLM priorities set per request id (missing ids keep none)."""
    return [replace(r, priority=priorities.get(r.id, r.priority)) for r in plan]
