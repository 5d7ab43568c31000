"""Shared learning: every replica's predictor learns from the completions of all replicas, through one Redis stream.

Each completion's evidence is what the predictor itself learns from (`Predictor.share_with`):
`auto`'s (predicted, actual) per candidate, which fill its quality windows, and the learned
predictor's feature vector (prompt embedding, prompt length, self-prediction block) with the
actual length, which joins its next refit. Vectors, not prompts: no prompt text leaves a
replica, and no replica embeds another's prompts again; replicas must run the same predictor
configuration (a vector of another width is ignored).

Entries go out in batches every `FLUSH_EVERY_S` (`XADD`, the stream capped near `MAX_ENTRIES`),
and come in by a blocking `XREAD` from the start of the stream: a replica that joins learns
from the history the stream keeps. Its own entries are skipped (it learned from them when they
completed). They are absorbed in the learning worker, never on the event loop. While Redis is
away the replica learns from its own completions only, keeps up to `MAX_ENTRIES` of them to
send when it returns, and reads on from where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lengthwise.gateway.shared_queue import PREFIX
from lengthwise.predict.base import Predictor
from lengthwise.predict.worker import learning_worker

log = logging.getLogger("lengthwise.gateway")

STREAM = PREFIX + "learning"
#: The stream's length (approximately) and the most entries kept while Redis is away.
MAX_ENTRIES = 10_000
FLUSH_EVERY_S = 0.2
#: Entries read at most per XREAD, and how long it blocks for new ones.
READ_COUNT = 500
READ_BLOCK_MS = 1000


class SharedLearning:
    """Publishes `predictor`'s evidence and absorbs the other replicas'; see the module docstring."""

    def __init__(self, redis: Redis, replica: str, predictor: Predictor) -> None:
        self.redis, self.replica, self.predictor = redis, replica, predictor
        self.published = self.absorbed = 0
        self.connected = True
        self._outbox: deque[str] = deque(maxlen=MAX_ENTRIES)
        self._last_id = "0-0"
        self._loop: asyncio.AbstractEventLoop | None = None

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "published": self.published, "absorbed": self.absorbed,
                "unsent": len(self._outbox)}

    async def run(self) -> None:
        """Send and receive until cancelled (the gateway's lifespan)."""
        self._loop = asyncio.get_running_loop()
        self.predictor.share_with(self._publish)
        await asyncio.gather(self._sending(), self._receiving())

    def _publish(self, evidence: dict[str, Any]) -> None:
        """The predictor's sink; called from the learning worker's thread."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._outbox.append, json.dumps(evidence, separators=(",", ":")))

    async def _sending(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            if not self._outbox:
                continue
            batch = list(self._outbox)
            self._outbox.clear()
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for data in batch:
                        pipe.xadd(STREAM, {"replica": self.replica, "evidence": data}, maxlen=MAX_ENTRIES,
                                  approximate=True)
                    await pipe.execute()
            except RedisError as e:
                self._outbox.extendleft(reversed(batch))  # beyond MAX_ENTRIES, the newest are dropped
                self._away(e)
                continue
            self.published += len(batch)
            self._back()

    async def _receiving(self) -> None:
        while True:
            try:
                reply = await self.redis.xread({STREAM: self._last_id}, count=READ_COUNT, block=READ_BLOCK_MS)
            except RedisError as e:
                self._away(e)
                await asyncio.sleep(READ_BLOCK_MS / 1000)
                continue
            self._back()
            evidence = []
            for _, entries in reply or ():
                for entry_id, fields in entries:
                    self._last_id = entry_id
                    if fields.get("replica") != self.replica:
                        evidence.append(json.loads(fields["evidence"]))
            if evidence:
                learning_worker().submit(self._absorb_all, evidence)

    def _absorb_all(self, evidence: list[dict[str, Any]]) -> None:
        for item in evidence:
            try:
                self.predictor.absorb(item)
            except Exception:  # one malformed entry must not stop the others
                log.exception("shared learning: could not absorb an entry")
        self.absorbed += len(evidence)

    def _away(self, error: Exception) -> None:
        if self.connected:
            self.connected = False
            log.warning("shared learning: Redis unreachable (%s: %s); learning from this replica's completions "
                        "only until it answers again", type(error).__name__, error)

    def _back(self) -> None:
        if not self.connected:
            self.connected = True
            log.info("shared learning: Redis answers again")
