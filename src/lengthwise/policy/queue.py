"""A waiting queue ordered by a policy: the one structure the gateway and the simulator share."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from lengthwise.policy.base import Job, Policy


class WaitingQueue:
    """Jobs waiting for admission, popped in policy order.

    Time-invariant policies use a heap keyed once on insertion (O(log n));
    time-dependent ones (aging, HRRN) are ranked afresh at each pop (O(n)).
    Removal is lazy so that a cancelled request costs O(1).
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._heap: list[tuple[float, float, int, Job]] = []
        self._live: dict[str, Job] = {}
        self._seq = itertools.count()

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
        key = self.policy.key(job, now) if self.policy.time_invariant else 0.0
        heapq.heappush(self._heap, (key, job.arrival, next(self._seq), job))

    def remove(self, job_id: str) -> Job | None:
        """Drop a job (e.g. its client went away); the heap entry is skipped later."""
        return self._live.pop(job_id, None)

    def peek(self, now: float) -> Job | None:
        if not self.policy.time_invariant:
            return self._best_now(now)
        self._drop_dead_top()
        return self._heap[0][3] if self._heap else None

    def pop(self, now: float) -> Job | None:
        if not self.policy.time_invariant:
            job = self._best_now(now)
            if job is not None:
                del self._live[job.id]
                self._compact_if_sparse()
            return job
        self._drop_dead_top()
        if not self._heap:
            return None
        job = heapq.heappop(self._heap)[3]
        del self._live[job.id]
        return job

    def _best_now(self, now: float) -> Job | None:
        if not self._live:
            return None
        return min(self._live.values(), key=lambda j: (self.policy.key(j, now), j.arrival, j.id))

    def _drop_dead_top(self) -> None:
        while self._heap and self._live.get(self._heap[0][3].id) is not self._heap[0][3]:
            heapq.heappop(self._heap)

    def _compact_if_sparse(self) -> None:
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [e for e in self._heap if self._live.get(e[3].id) is e[3]]
            heapq.heapify(self._heap)
