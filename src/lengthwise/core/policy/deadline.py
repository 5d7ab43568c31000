"""Deadline: a wrapper that keeps any policy's waits within k × what FCFS would have made them.

A fixed maximum wait (aging's `max_wait=60`) means nothing on a workload whose FCFS tail
is 5 s or 500 s, and a bound relative to each request's own size (HRRN's slowdown)
lets exactly the long requests wait longest. What transfers across workloads, loads and
engines is the wait FCFS itself would impose: the predicted work queued ahead of an
arrival ÷ the rate at which the engine takes work off the queue (`FcfsWait`).
"""

from __future__ import annotations

from lengthwise.core.policy.base import Job, Policy, Wrapper
from lengthwise.core.policy.service import ServiceTime

#: Overdue keys are deadline − this: below every key a base policy gives (seconds since
#: the clock's start stay well under it), in deadline order, at 0.1 ms resolution.
OVERDUE_OFFSET = 1e12


class FcfsWait:
    """The wait FCFS would impose on an arrival now, from the queue's predicted work.

    `queued` is the work (predicted engine-seconds) waiting; `rate` the work admitted per
    second while jobs waited (exponentially weighted over `smoothing`⁻¹ admissions; gaps
    that began with an empty queue say nothing about the engine and are skipped).
    `reference` is the largest such wait of recent arrivals, decaying by 1/`memory` per
    arrival: the scale of waits this workload has, not one instant's.

    Under a policy other than FCFS the queue's content is biased toward long jobs, so
    its predicted work is only unbiased when predictions are calibrated expectations (as
    the gateway's are).
    """

    def __init__(self, memory: int = 1000, smoothing: float = 0.001) -> None:
        if memory < 1 or not 0 < smoothing <= 1:
            raise ValueError(f"FCFS wait: need memory >= 1 and 0 < smoothing <= 1, got {memory}, {smoothing}")
        self.decay, self.smoothing = 1.0 - 1.0 / memory, smoothing
        self.queued, self.waiting = 0.0, 0
        self.reference = 0.0
        self._admissions = 0  # admissions that measured the rate
        self._work = 0.0  # per admission, smoothed
        self._gap = 0.0  # seconds between admissions, smoothed
        self._last: float | None = None
        self._busy = False  # jobs waited throughout since the last admission

    @property
    def rate(self) -> float | None:
        """Predicted work admitted per second while the queue was not empty; None before it is measured."""
        return self._work / self._gap if self._gap > 0 else None

    def joined(self, work: float) -> float | None:
        """A job of `work` arrives: its FCFS-equivalent wait folded into `reference`, which is
        returned; None while the rate is unknown (then `later` gives it, from the work ahead)."""
        rate = self.rate
        self.reference *= self.decay
        wait = None if rate is None else self.queued / rate
        self.queued += work
        self.waiting += 1
        return None if wait is None else self.fold(wait)

    def later(self, ahead: float) -> float | None:
        """The FCFS-equivalent wait of a job that arrived with `ahead` work queued before the rate
        was known, folded into `reference`; None while it is still unknown."""
        rate = self.rate
        return None if rate is None else self.fold(ahead / rate)

    def fold(self, wait: float) -> float:
        """`wait` folded into `reference` (the largest recent wait), which is returned."""
        self.reference = max(wait, self.reference)
        return self.reference

    def left(self, work: float, admitted_at: float | None) -> None:
        """A job of `work` left the queue: admitted at `admitted_at`, or dropped (None)."""
        self.waiting -= 1
        self.queued = self.queued - work if self.waiting else 0.0  # no float drift once empty
        if admitted_at is None:
            return
        if self._busy and self._last is not None:
            self._admissions += 1
            a = max(self.smoothing, 1.0 / self._admissions)  # a plain mean until the window fills
            self._work += a * (work - self._work)
            self._gap += a * (admitted_at - self._last - self._gap)
        self._last = admitted_at
        self._busy = self.waiting > 0


class Deadline(Wrapper):
    """`base`'s order, but a job waiting past arrival + k × the FCFS-equivalent wait goes first.

    When a job joins the queue its deadline is fixed: arrival + k · `FcfsWait.reference`
    (never below k × its own FCFS-equivalent wait). A job that joins before the engine's
    rate is measured (a fresh gateway's first burst) gets it as soon as the rate is: from
    the work queued ahead of it then (with a deadline of its arrival instead, a first burst
    would all be overdue at once and served in arrival order). Until then it ranks by `base`; once
    overdue it goes ahead of every job that is not, overdue jobs by earliest deadline
    (EDF), so under overload the bound degrades in deadline order rather than starving
    anyone. The key changes once, at the deadline: WaitingQueue re-keys it then
    (`piecewise_constant`). A job's size is its `ServiceTime` (the base's estimator if it
    has one). A static engine priority cannot express it: it holds where our queue decides.
    """

    def __init__(self, base: Policy, k: float = 1.5, memory: int = 1000) -> None:
        if not k > 0:
            raise ValueError(f"deadline: k must be > 0, got {k}")
        super().__init__(base, "deadline")
        self.k = k
        self.service = base.service or ServiceTime()
        self.fcfs = FcfsWait(memory)
        self.time_invariant = False
        self.piecewise_constant = base.time_invariant
        self._due: dict[str, tuple[float | None, float]] = {}  # job id → (deadline or None: not yet known, work)
        #: Jobs that joined before the rate was measured: job id → (job, work queued ahead of it).
        self._unknown: dict[str, tuple[Job, float]] = {}
        self._rescheduled: list[Job] = []

    def enqueued(self, job: Job, now: float) -> None:
        work = self.service.of(job)
        ahead = self.fcfs.queued
        wait = self.fcfs.joined(work)
        if wait is None and job.deadline is None:
            self._unknown[job.id] = (job, ahead)
            self._due[job.id] = (None, work)
        else:
            due = job.arrival + self.k * wait if wait is not None else job.deadline
            if job.deadline is not None:  # queued again after a preemption: its first promise stands
                due = min(due, job.deadline)
            job.deadline = due
            self._due[job.id] = (due, work)
        super().enqueued(job, now)

    def dequeued(self, job: Job, now: float | None) -> None:
        entry = self._due.pop(job.id, None)
        self._unknown.pop(job.id, None)
        if entry is not None:
            self.fcfs.left(entry[1], now)
        if self._unknown and self.fcfs.rate is not None:
            self._fix_late_deadlines()
        super().dequeued(job, now)

    def _fix_late_deadlines(self) -> None:
        """The rate is now measured: the jobs that joined before get their deadlines, and are re-keyed."""
        for job, ahead in self._unknown.values():
            wait = self.fcfs.later(ahead)
            assert wait is not None
            job.deadline = job.arrival + self.k * wait
            self._due[job.id] = (job.deadline, self._due[job.id][1])
            self._rescheduled.append(job)
        self._unknown.clear()

    def rescheduled(self) -> list[Job]:
        jobs, self._rescheduled = self._rescheduled, []
        return jobs + self.base.rescheduled()

    def deadline(self, job: Job) -> float | None:
        entry = self._due.get(job.id)
        return None if entry is None else entry[0]

    def overdue(self, job: Job, now: float) -> bool:
        """Past the deadline it was promised when it queued. A job admitted at once was promised
        nothing (it did not wait); preempted, it queues and gets its deadline then."""
        return (job.deadline is not None and now >= job.deadline) or self.base.overdue(job, now)

    def key(self, job: Job, now: float) -> float:
        due = self.deadline(job)
        if due is not None and now >= due:
            return due - OVERDUE_OFFSET
        return self.base.key(job, now)

    def rekey_at(self, job: Job, now: float) -> float | None:
        due = self.deadline(job)
        return due if due is not None and due > now else None

    def __repr__(self) -> str:
        return f"Deadline({self.base!r}, k={self.k})"
