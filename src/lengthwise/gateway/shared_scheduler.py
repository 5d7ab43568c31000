"""Queue mode across gateway replicas: the shared Redis queue while Redis answers, the local one when not.

Every request this replica admitted, whichever way, is in `_held` (member → backend) until
it ends. That one record keeps the two paths consistent through a change of path:

- Redis fails (any call): log once, count it, let the local `Scheduler` count `_held` as
  running, and move every request waiting in Redis to the local queue (its wait raises
  `Moved`, and `admit` queues it again). What they left in Redis is remembered (`_orphans`).
- The heartbeat succeeds again: it has already renewed a lease for every member of `_held`
  (so seats taken while Redis was away count there at once), the orphans are taken out,
  and the local queue's waiters move back to Redis the same way.

A request is only ever in one queue, served by the one coroutine that accepted it: a change
of path never drops or duplicates it. The heartbeat (every `lease_s / 3`) also pumps each
backend, so that a seat whose lease expired (a killed replica's) is granted again within
`lease_s` plus one beat. A heartbeat that finds Redis no longer knew this replica (Redis
restarted empty, or the replica was silent longer than a lease) re-queues its waiters too.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from redis.exceptions import RedisError

from lengthwise.core.policy import Job, Policy
from lengthwise.gateway.backends import Backend, BackendPool
from lengthwise.gateway.scheduler import BackendGone, QueueFull, Scheduler
from lengthwise.gateway.query_window import Query
from lengthwise.gateway.shared_queue import Seats, SharedQueue, backend_id, member, member_backend

log = logging.getLogger("lengthwise.gateway")


class Moved(Exception):
    """The request's queue changed (Redis left or came back): queue it again on the other path."""


class SharedScheduler(Scheduler):
    """Queue mode through `queue` (Redis), falling back to this `Scheduler`'s own queues; see the module docstring."""

    def __init__(self, policy: Policy, max_inflight: int, max_queue: int, clock: Callable[[], float],
                 queue: SharedQueue, pool: BackendPool, url: str) -> None:
        if not (policy.time_invariant or policy.piecewise_constant):
            raise ValueError(f"policy {policy.name!r} re-ranks waiting requests at every admission; a queue shared "
                             "through Redis needs keys that are fixed or change at known instants (not hrrn)")
        super().__init__(policy, max_inflight, max_queue, clock)
        self.queue, self.pool, self.url = queue, pool, url
        self.connected = False
        self.fallbacks = 0
        self.last_error: str | None = None
        self._held: dict[str, Backend] = {}
        self._waiters: dict[str, tuple[asyncio.Future[None], Backend]] = {}
        self._orphans: set[str] = set()
        self._seen: dict[int, Seats] = {}
        self._tries = itertools.count()
        self._lock = asyncio.Lock()  # a heartbeat's renewals never overtake a release
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- what the gateway asks ---------------------------------------------------------

    def waiting(self, backend: Backend | None = None) -> int:
        own = sum(1 for _, b in self._waiters.values() if backend is None or b is backend)
        return own + super().waiting(backend)

    def running(self, backend: Backend) -> int:
        """Seats taken on `backend` by all replicas as of the last exchange with Redis; local count when away."""
        seen = self._seen.get(backend.index)
        return seen.running if self.connected and seen is not None else super().running(backend)

    async def admit(self, job: Job, backend: Backend, *, requeued: bool = False,
                    query: Query | None = None) -> Callable[[], None]:
        # `requeued` (a preemption's) and `query` (the query window's) never come here: --preempt and
        # --query-window need the gateway's own queue.
        while True:
            name = member(job.arrival, self.queue.replica, backend_id(backend.url), f"{job.id}#{next(self._tries)}")
            try:
                if self.connected:
                    await self._admit_shared(job, backend, name)
                else:
                    await super().admit(job, backend, requeued=requeued)
            except Moved:
                continue
            self._held[name] = backend
            return functools.partial(self._release, name)

    def evict(self, backend: Backend, error: Exception | None = None) -> None:
        super().evict(backend, error)
        for future, b in list(self._waiters.values()):
            if b is backend and not future.done():
                future.set_exception(error or BackendGone(backend.url))

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "fallbacks": self.fallbacks, "last_error": self.last_error,
                "lease_s": self.queue.lease_s}

    async def run(self) -> None:
        """The heartbeat and the grant listener, until cancelled (the gateway's lifespan); then the
        releases under way are given a moment to reach Redis."""
        try:
            await asyncio.gather(self._beating(), self._listening())
        finally:
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.queue.lease_s / 3)

    # ---- the shared path ---------------------------------------------------------------

    async def _admit_shared(self, job: Job, backend: Backend, name: str) -> None:
        if self.waiting() >= self.max_queue:
            raise QueueFull(f"{self.max_queue} requests are waiting already")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[name] = (future, backend)
        now = self.clock()
        self.policy.enqueued(job, now)
        key, switch_at = self.policy.key(job, now), self.policy.rekey_at(job, now)
        next_key = None if switch_at is None else self.policy.key(job, switch_at)
        try:
            try:
                seats = await self.queue.enqueue(backend_id(backend.url), name, key, now, switch_at, next_key)
            except RedisError as e:
                self._fall_back(e)
                if not future.done():  # fallen back already, by another request's failure
                    future.set_exception(Moved())
            else:
                self._take(backend, seats)
            await future
        except BaseException:
            self.policy.dequeued(job, None)
            if isinstance(future.exception() if future.done() and not future.cancelled() else None, Moved):
                self._orphans.add(name)
            else:  # cancelled or evicted: out of the queue, or give back the seat granted meanwhile
                self._spawn(self._leave(backend, name))
            raise
        finally:
            self._waiters.pop(name, None)
        self.policy.dequeued(job, self.clock())

    def _take(self, backend: Backend, seats: Seats) -> None:
        """A script's reply: wake this replica's requests it granted, remember the backend's state."""
        self._seen[backend.index] = seats
        for name in seats.granted:
            self._granted(name)

    def _granted(self, name: str) -> None:
        waiter = self._waiters.get(name)
        if waiter is not None and not waiter[0].done():
            waiter[0].set_result(None)
            return
        # Its request left meanwhile: give the seat back.
        backend = self._backend_of(name)
        if backend is not None:
            self._spawn(self._leave(backend, name))

    def _release(self, name: str) -> None:
        backend = self._held.pop(name)
        if self.connected:
            self._spawn(self._leave(backend, name))
        else:
            self._orphans.add(name)  # its lease, if Redis holds one, goes on rejoining (or expires)
            super().release(backend)

    async def _leave(self, backend: Backend, name: str) -> None:
        try:
            async with self._lock:
                seats = await self.queue.leave(backend_id(backend.url), name, self.clock())
        except RedisError as e:
            self._orphans.add(name)
            self._fall_back(e)
        else:
            self._take(backend, seats)

    # ---- changes of path ---------------------------------------------------------------

    def _fall_back(self, error: Exception) -> None:
        if not self.connected:
            return
        self.connected = False
        self.fallbacks += 1
        self.last_error = f"{type(error).__name__}: {error}"
        log.warning("Redis %s unreachable (%s): queueing locally until it answers again", self.url, self.last_error)
        # Pooled connections may be stale (a restarted Redis): the next exchange opens fresh ones.
        self._spawn(self.queue.redis.connection_pool.disconnect())
        for backend, running in Counter(self._held.values()).items():
            self.set_running(backend, running)
        for future, _ in self._waiters.values():
            if not future.done():
                future.set_exception(Moved())

    async def _rejoin(self) -> None:
        self.connected = True
        log.info("Redis %s: %s", self.url, "back on the shared queue" if self.fallbacks else "sharing the queue")
        for backend in self.pool.backends:
            self.set_running(backend, 0)
            super().evict(backend, Moved())
        orphans, self._orphans = self._orphans, set()
        for name in orphans:
            backend = self._backend_of(name)
            if backend is not None:
                await self._leave(backend, name)

    def _backend_of(self, name: str) -> Backend | None:
        return next((b for b in self.pool.backends if backend_id(b.url) == member_backend(name)), None)

    async def _beat(self) -> None:
        held: dict[str, list[str]] = {backend_id(b.url): [] for b in self.pool.backends}
        async with self._lock:
            for name, backend in self._held.items():
                held[backend_id(backend.url)].append(name)
            replies = await self.queue.heartbeat(held, self.clock())
        if self.connected and not all(s.known for s in replies.values()):
            self._fall_back(RuntimeError("Redis no longer knew this replica (restarted, or silent past a lease)"))
        for backend in self.pool.backends:
            self._take(backend, replies[backend_id(backend.url)])
        if not self.connected:
            await self._rejoin()

    async def _beating(self) -> None:
        interval = self.queue.lease_s / 3
        while True:
            started = time.monotonic()
            try:
                await self._beat()
            except RedisError as e:
                self._fall_back(e)
            await asyncio.sleep(max(interval - (time.monotonic() - started), 0.0))

    async def _listening(self) -> None:
        while True:
            if not self.connected:
                await asyncio.sleep(self.queue.lease_s / 3)
                continue
            try:
                name = await self.queue.next_grant(timeout_s=1.0)
            except RedisError as e:
                self._fall_back(e)
                continue
            if name is not None:
                self._granted(name)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
