"""A waiting queue ordered by a policy: the one structure the gateway and the simulator share."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from lengthwise.core.policy.base import Job, Policy


class WaitingQueue:
    """Jobs waiting for admission, popped in policy order (ties by arrival, then insertion).

    Time-invariant policies use a heap keyed once on insertion (O(log n)). Policies
    whose keys are piecewise constant in time (a max-wait bound) keep the heap and
    re-key a job at the instants the policy names. Other time-dependent ones (HRRN)
    are ranked afresh at each pop (O(n)). Removal is lazy so that a cancelled
    request costs O(1).
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._heap: list[tuple[float, float, int, Job]] = []
        self._live: dict[str, Job] = {}
        #: The sequence number of each live job's one valid heap entry.
        self._entry: dict[str, int] = {}
        self._rekeys: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._use_heap = policy.time_invariant or policy.piecewise_constant

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._live

    def __iter__(self) -> Iterator[Job]:
        return iter(list(self._live.values()))

    def add(self, job: Job, now: float) -> None:
        if job.id in self._live:
            raise ValueError(f"job {job.id!r} is already queued")
        self._live[job.id] = job
        self.policy.enqueued(job, now)
        if self._use_heap:
            self._push(job, now)
        else:
            self._entry[job.id] = -1

    def remove(self, job_id: str) -> Job | None:
        """Drop a job (e.g. its client went away); its heap entry is skipped later."""
        return self._take(job_id, None)

    def _take(self, job_id: str, admitted_at: float | None) -> Job | None:
        self._entry.pop(job_id, None)
        job = self._live.pop(job_id, None)
        if job is not None:
            self.policy.dequeued(job, admitted_at)
        return job

    def peek(self, now: float) -> Job | None:
        if not self._use_heap:
            return self._best_now(now)
        self._settle(now)
        return self._heap[0][3] if self._heap else None

    def pop(self, now: float) -> Job | None:
        if not self._use_heap:
            job = self._best_now(now)
            if job is not None:
                self._take(job.id, now)
            return job
        self._settle(now)
        if not self._heap:
            return None
        job = heapq.heappop(self._heap)[3]
        self._take(job.id, now)
        return job

    def _push(self, job: Job, now: float) -> None:
        seq = next(self._seq)
        self._entry[job.id] = seq
        heapq.heappush(self._heap, (self.policy.key(job, now), job.arrival, seq, job))
        if self.policy.piecewise_constant:
            when = self.policy.rekey_at(job, now)
            if when is not None:
                heapq.heappush(self._rekeys, (when, seq, job))

    def _settle(self, now: float) -> None:
        """Re-key jobs whose key changed by `now`, then drop dead entries off the top."""
        if self.policy.piecewise_constant:
            for job in self.policy.rescheduled():
                if job.id in self._live:
                    self._push(job, now)  # its older entries are dead now
        while self._rekeys and self._rekeys[0][0] <= now:
            _, seq, job = heapq.heappop(self._rekeys)
            if self._entry.get(job.id) == seq:
                self._push(job, now)
        heap, entry = self._heap, self._entry
        while heap and entry.get(heap[0][3].id) != heap[0][2]:
            heapq.heappop(heap)
        if len(heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in heap if entry.get(e[3].id) == e[2]]
            heapq.heapify(self._heap)

    def _best_now(self, now: float) -> Job | None:
        if not self._live:
            return None
        return min(self._live.values(), key=lambda j: (self.policy.key(j, now), j.arrival, j.id))
