"""Queue mode: hold requests in the gateway and admit them by policy, at most N in flight per backend.

Each backend has its own `WaitingQueue` (a request waits for the backend that served
its prediction query, whose prefix cache holds its prompt). A request holds a slot from
admission until its response ends; releasing a slot admits the next one in policy order.
With `query_window` W (`--query-window`), a backend's requests wait in a `QueryWindow`
instead: only its best W are queried, and admitted once queried (`query_window.py`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

from lengthwise.gateway.backends import Backend
from lengthwise.gateway.query_window import Query, QueryWindow
from lengthwise.core.policy import Job, Policy, WaitingQueue


class QueueFull(Exception):
    """The gateway holds `max_queue` waiting requests already."""


class BackendGone(Exception):
    """The backend a request was waiting for left the pool."""


class Scheduler:
    def __init__(
        self,
        policy: Policy,
        max_inflight: int,
        max_queue: int,
        clock: Callable[[], float] = time.monotonic,
        query_window: int = 0,
    ) -> None:
        self.policy = policy
        self.max_inflight = max_inflight
        self.max_queue = max_queue
        self.clock = clock
        #: The query-window rule's W; 0: off (requests wait in the admission queue with their prediction).
        self.query_window = query_window
        #: Per backend, the queue admission pops from (with the window rule: its window's `ready`).
        self._queues: dict[int, WaitingQueue] = {}
        self._windows: dict[int, QueryWindow] = {}
        self._running: dict[int, int] = {}
        #: Called with the backend each time a request starts waiting for it (preemption looks then).
        self.on_queued: Callable[[Backend], None] | None = None

    def waiting(self, backend: Backend | None = None) -> int:
        if backend is None:
            return sum(len(q) for q in self._queues.values()) if not self.query_window else \
                sum(len(w) for w in self._windows.values())
        return len(self._window(backend)) if self.query_window else len(self._queue(backend))

    def window(self, backend: Backend) -> QueryWindow | None:
        """`backend`'s query window, with the rule on; else None."""
        return self._window(backend) if self.query_window else None

    def running(self, backend: Backend) -> int:
        return self._running.get(backend.index, 0)

    async def admit(self, job: Job, backend: Backend, *, requeued: bool = False,
                    query: Query | None = None) -> Callable[[], None]:
        """Return once `job` holds a slot on `backend`: what gives it back; raises QueueFull or BackendGone.

        A `requeued` job (one that yielded its slot to a preemption) is never refused: it was
        accepted already. A cancelled wait leaves the queue (or gives back a slot granted meanwhile).
        With the query-window rule, `query` is run once `job` is among the W best waiting for
        `backend` (a job admitted at once, with a free seat and nothing waiting, is not queried).
        """
        queue = self._queue(backend)
        if not self.waiting(backend) and self.running(backend) < self.max_inflight:
            self._running[backend.index] = self.running(backend) + 1
            return functools.partial(self.release, backend)
        if self.waiting() >= self.max_queue and not requeued:
            raise QueueFull(f"{self.max_queue} requests are waiting already")
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        job.payload = admitted
        if (window := self.window(backend)) is not None:
            window.add(job, query, self.clock())
        else:
            queue.add(job, self.clock())
        if self.on_queued is not None:
            self.on_queued(backend)
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.cancelled():
                if window is not None:
                    window.remove(job.id)
                else:
                    queue.remove(job.id)
            elif admitted.exception() is None:
                self.release(backend)
            raise
        return functools.partial(self.release, backend)

    def head(self, backend: Backend) -> Job | None:
        """The request `backend`'s queue admits next, if any waits."""
        return self._queue(backend).peek(self.clock())

    def release(self, backend: Backend) -> None:
        """A request on `backend` ended: free its slot and admit the next by policy."""
        self._running[backend.index] = self.running(backend) - 1
        self._admit_next(backend)

    def _admit_next(self, backend: Backend) -> None:
        """Fill `backend`'s free slots from its queue, in policy order (and refill its window)."""
        queue = self._queue(backend)
        while self.running(backend) < self.max_inflight:
            job = queue.pop(self.clock())
            if job is None:
                break
            if not job.payload.done():
                job.payload.set_result(None)
                self._running[backend.index] += 1
        if (window := self.window(backend)) is not None:
            window.fill(self.clock())

    def evict(self, backend: Backend, error: Exception | None = None) -> None:
        """`backend` left the pool: its waiting requests are told to go elsewhere (or get `error`)."""
        if (window := self.window(backend)) is not None:
            jobs = window.clear()
        else:
            queue = self._queue(backend)
            jobs = []
            while (job := queue.pop(self.clock())) is not None:
                jobs.append(job)
        for job in jobs:
            if not job.payload.done():
                job.payload.set_exception(error or BackendGone(backend.url))

    def set_running(self, backend: Backend, running: int) -> None:
        """Count `running` requests on `backend` (taken over from another admission path)."""
        self._running[backend.index] = running

    def _queue(self, backend: Backend) -> WaitingQueue:
        queue = self._queues.get(backend.index)
        if queue is None:
            queue = self._queues[backend.index] = \
                self._window(backend).ready if self.query_window else WaitingQueue(self.policy)
        return queue

    def _window(self, backend: Backend) -> QueryWindow:
        window = self._windows.get(backend.index)
        if window is None:
            window = self._windows[backend.index] = QueryWindow(
                self.policy, self.query_window, self.clock, functools.partial(self._admit_next, backend))
        return window
