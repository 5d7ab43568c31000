"""The query-window rule of queue mode (`--query-window W`): self-predict a request only near the head.

The self-prediction query prefills the request's prompt on its backend; the real request
finds that prefix cached only if it is admitted before the engine evicts it, which happens
once other requests have written about a KV cache's worth of tokens
(docs/results/eviction/). Queried at arrival, a request that then waits long has lost it.

So, as the simulator's rule (`sim.config.QueryConfig.window`): a backend's waiting requests
are ordered by a cheap prediction; only its best W are queried (their query under way, or
answered and waiting among the queried, ordered by the answer), and only queried requests
are admitted. A query that fails or times out leaves its request with the cheap prediction,
ready all the same, so no request waits on a query for longer than the prediction timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from lengthwise.core.policy import Job, Policy, WaitingQueue

log = logging.getLogger("lengthwise.gateway")

#: A request's self-prediction query: sets its job's `predicted_tokens` from the answer (or leaves the
#: cheap prediction). The window awaits it once, when the request enters the window.
Query = Callable[[], Awaitable[None]]


class QueryWindow:
    """One backend's waiting requests under the rule: by cheap prediction, being queried, and queried.

    `ready` is what admission pops from; `on_ready` is called each time a request joins it.
    """

    def __init__(self, policy: Policy, size: int, clock: Callable[[], float], on_ready: Callable[[], None]) -> None:
        if size < 1:
            raise ValueError(f"the query window must hold at least one request, got {size}")
        self.size = size
        #: Not queried yet, ordered by the cheap prediction.
        self.waiting = WaitingQueue(policy)
        #: Queried (or their query failed), ordered by the answer: admitted from here.
        self.ready = WaitingQueue(policy)
        self._queries: dict[str, Query] = {}
        #: Requests whose query is under way, and the query's task.
        self._querying: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self._clock = clock
        self._on_ready = on_ready

    def __len__(self) -> int:
        return len(self.waiting) + len(self._querying) + len(self.ready)

    def querying(self) -> int:
        """Requests whose query is under way."""
        return len(self._querying)

    def add(self, job: Job, query: Query | None, now: float) -> None:
        """`job` starts waiting; without a query it is ready at once."""
        if query is None:
            self.ready.add(job, now)
            self._on_ready()
            return
        self._queries[job.id] = query
        self.waiting.add(job, now)
        self.fill(now)

    def fill(self, now: float) -> None:
        """Query the best waiting requests until W are queried or being queried."""
        while len(self._querying) + len(self.ready) < self.size and (job := self.waiting.pop(now)) is not None:
            query = self._queries.pop(job.id)
            self._querying[job.id] = job, asyncio.create_task(self._query(job, query), name=f"query {job.id}")

    async def _query(self, job: Job, query: Query) -> None:
        try:
            await query()
        except Exception:  # the query falls back by itself; a bug must not strand its request
            log.exception("request %s: the window's prediction query failed", job.id)
        if self._querying.pop(job.id, None) is None:
            return  # removed meanwhile
        self.ready.add(job, self._clock())
        self._on_ready()

    def remove(self, job_id: str) -> None:
        """`job_id` leaves wherever it waits (its client went away): a query under way is dropped,
        and the next waiting request takes its place in the window."""
        self._queries.pop(job_id, None)
        self.waiting.remove(job_id)
        self.ready.remove(job_id)
        querying = self._querying.pop(job_id, None)
        if querying is not None:
            querying[1].cancel()
        self.fill(self._clock())

    def clear(self) -> list[Job]:
        """Every request held, all taken out (their backend left the pool); queries under way are dropped."""
        now = self._clock()
        jobs = []
        for queue in (self.ready, self.waiting):
            while (job := queue.pop(now)) is not None:
                jobs.append(job)
        for job, task in self._querying.values():
            task.cancel()
            jobs.append(job)
        self._querying.clear()
        self._queries.clear()
        return jobs
