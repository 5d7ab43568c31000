"""The scheduling-policy interface, shared by the live gateway and the simulator.

A policy only ranks jobs: `key(job, now)`, lower is served first. Everything else
(when to admit, how many run, preemption) belongs to the engine or the gateway,
so that what we simulate is exactly what we run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from lengthwise.core.policy.job import Job
from lengthwise.core.policy.service import ServiceTime

__all__ = ["Job", "Policy", "Wrapper"]


class Policy(ABC):
    """Ranks jobs; lower keys go first, ties by arrival then id."""

    name: str = "policy"
    #: True when a waiting job's key cannot change while it waits, so a heap keyed
    #: once at insertion stays ordered. Time-dependent policies set it False.
    time_invariant: bool = True
    #: True when a waiting job's key changes only at the instants `rekey_at` names
    #: (a max-wait bound): WaitingQueue then keeps its heap and re-keys at those instants.
    piecewise_constant: bool = False
    #: The service-time estimator the policy ranks by, if any: whoever runs the requests
    #: feeds it (`ServiceTime.observe`) as they complete.
    service: ServiceTime | None = None

    @abstractmethod
    def key(self, job: Job, now: float) -> float:
        """The job's rank at time `now`; lower is served first."""

    def rekey_at(self, job: Job, now: float) -> float | None:
        """The next instant after `now` at which a waiting `job`'s key changes; None if never."""
        return None

    def rescheduled(self) -> list[Job]:
        """Waiting jobs whose `rekey_at` the policy changed since the last call, other than when
        they were keyed (a deadline fixed once the engine's rate is known): WaitingQueue keys
        them again. Most policies: none."""
        return []

    def enqueued(self, job: Job, now: float) -> None:
        """`job` joined a WaitingQueue (before it is keyed there). Most policies ignore it."""

    def dequeued(self, job: Job, now: float | None) -> None:
        """`job` left a WaitingQueue: admitted at `now`, or dropped (`now` None)."""

    def overdue(self, job: Job, now: float) -> bool:
        """True when `job` has waited past the bound the policy promised it: a running job that is
        overdue must not be preempted (it would wait again). Policies without a bound: never."""
        return False

    def quantum(self, job: Job) -> float | None:
        """Output tokens `job` may generate before it must yield to a waiting job whose key is
        no worse than its own; None: never. Only engines that can preempt honor it."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Wrapper(Policy):
    """A policy that modifies `base`'s keys (aging, deadlines): passes everything else through."""

    def __init__(self, base: Policy, suffix: str) -> None:
        self.base = base
        self.name = f"{base.name}+{suffix}"
        self.service = base.service

    def rescheduled(self) -> list[Job]:
        return self.base.rescheduled()

    def enqueued(self, job: Job, now: float) -> None:
        self.base.enqueued(job, now)

    def dequeued(self, job: Job, now: float | None) -> None:
        self.base.dequeued(job, now)

    def overdue(self, job: Job, now: float) -> bool:
        return self.base.overdue(job, now)

    def quantum(self, job: Job) -> float | None:
        return self.base.quantum(job)
