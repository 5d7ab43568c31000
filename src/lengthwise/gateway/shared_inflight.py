"""Priority mode across replicas: each backend's requests in flight, summed over every replica.

In priority mode the engine queues, and the gateway only decides whether a request must
wait for its prediction: not while the backend runs fewer than `--backend-seats` requests
(`Predicting.nothing_waits`). Each replica sees only its own requests, so with N replicas a
full engine would look 1/N full. So every `EVERY_S` each replica writes its own count per
backend into the backend's hash (field: replica, value: `count expires_at`) and reads the
others' into `Backend.peer_inflight`; a killed replica's entry is ignored, then deleted,
once it expires. Best-effort: the sum is up to one period old, and while Redis is away the
others count as 0 (each replica alone, as without Redis).
"""

from __future__ import annotations

import asyncio
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.shared_queue import PREFIX, backend_id

EVERY_S = 0.25
#: An entry not renewed for this long is a gone replica's.
EXPIRES_S = 4 * EVERY_S


class SharedInflight:
    """Keeps `Backend.peer_inflight` of `pool` up to date; see the module docstring."""

    def __init__(self, redis: Redis, replica: str, pool: BackendPool) -> None:
        self.redis, self.replica, self.pool = redis, replica, pool

    async def run(self) -> None:
        """Exchange counts until cancelled (the gateway's lifespan)."""
        while True:
            try:
                await self.exchange(time.time())
            except RedisError:  # the shared queue or learning logs the outage
                for backend in self.pool.backends:
                    backend.peer_inflight = 0
            await asyncio.sleep(EVERY_S)

    async def exchange(self, now: float) -> None:
        """Write this replica's counts, read the others' (`now`: wall-clock seconds, shared by the hosts)."""
        keys = [f"{PREFIX}{{{backend_id(b.url)}}}:inflight" for b in self.pool.backends]
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, backend in zip(keys, self.pool.backends, strict=True):
                pipe.hset(key, self.replica, f"{backend.inflight} {now + EXPIRES_S}")
                pipe.hgetall(key)
            replies = await pipe.execute()
        for key, backend, entries in zip(keys, self.pool.backends, replies[1::2], strict=True):
            peers, expired = 0, []
            for replica, value in entries.items():
                count, expires = value.split()
                if float(expires) < now:
                    expired.append(replica)
                elif replica != self.replica:
                    peers += int(count)
            backend.peer_inflight = peers
            if expired:
                await self.redis.hdel(key, *expired)
