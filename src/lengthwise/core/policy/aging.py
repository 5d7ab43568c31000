"""Aging: a wrapper that bounds how long any policy can make a job wait."""

from __future__ import annotations

from lengthwise.core.policy.base import Job, Policy, Wrapper

#: Key of a job past its maximum wait: ahead of every other key; ties by arrival.
OVERDUE_KEY = -1e18


class Aging(Wrapper):
    """`base`'s key, minus `rate` per second waited; past `max_wait` seconds, first in line.

    Rate: key = base − rate · (now − arrival). At any instant that orders jobs exactly
    like base + rate · arrival, which is what `key` returns, so the policy stays
    time-invariant (when `base` is) and usable as a static vLLM priority. For SJF
    it reads: a second of waiting is worth `rate` predicted tokens.

    Max wait: a job that has waited `max_wait` seconds goes before all
    others, oldest first. That key changes with time, once per job, at
    arrival + max_wait; WaitingQueue re-keys it then (`piecewise_constant`). A static
    engine priority cannot express it: it holds only where our queue decides.
    """

    def __init__(self, base: Policy, rate: float = 0.0, max_wait: float | None = None) -> None:
        if rate < 0:
            raise ValueError(f"aging: rate must be >= 0, got {rate}")
        if max_wait is not None and max_wait < 0:
            raise ValueError(f"aging: max_wait must be >= 0 seconds, got {max_wait}")
        super().__init__(base, "aging")
        self.rate = rate
        self.max_wait = max_wait
        self.time_invariant = base.time_invariant and max_wait is None
        self.piecewise_constant = base.time_invariant and max_wait is not None

    def key(self, job: Job, now: float) -> float:
        if self.max_wait is not None and now >= job.arrival + self.max_wait:
            return OVERDUE_KEY
        return self.base.key(job, now) + self.rate * job.arrival

    def rekey_at(self, job: Job, now: float) -> float | None:
        if self.max_wait is None:
            return None
        deadline = job.arrival + self.max_wait  # the very expression `key` compares with
        return deadline if deadline > now else None

    def __repr__(self) -> str:
        return f"Aging({self.base!r}, rate={self.rate}, max_wait={self.max_wait})"
