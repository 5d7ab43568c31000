"""A request as the scheduling policies see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    """A request as a scheduler sees it.

    `predicted_tokens` is the (calibrated) expected output length; `cached_tokens` the
    prompt tokens the engine is expected to find cached (0 when unknown); `generated_tokens`
    and `service_s` grow while it runs (SRPT, MLFQ and round robin read them).
    `deadline` is the wait bound a deadline policy promised it when it first queued (a
    preempted job that queues again keeps it), None while it has none.
    `payload` carries whatever the owner needs back (the gateway's pending request,
    the simulator's request record) and is never read by a policy.
    """

    id: str
    arrival: float
    predicted_tokens: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    service_s: float = 0.0
    last_run: float | None = None
    deadline: float | None = None
    payload: Any = field(default=None, repr=False, compare=False)
