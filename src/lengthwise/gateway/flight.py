"""One accepted completion request on its way through the gateway, and what it holds."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from lengthwise.gateway.backends import Backend
from lengthwise.core import headers
from lengthwise.core.policy import Job
from lengthwise.gateway.stitch import Stitcher
from lengthwise.predict.base import Endpoint, LengthRequest, Prediction, Predictor
from lengthwise.predict.remaining import LengthDistribution


@dataclass(eq=False)
class Flight:
    """A request's state; what it holds (queue slot, predicted work on its backend, the backend's
    in-flight count, the upstream connection) is released through `hold()` groups, never by hand."""

    id: str
    endpoint: Endpoint
    body: dict[str, Any]
    raw: bytes
    job: Job
    headers: list[tuple[bytes, bytes]]
    #: When the gateway accepted the request (monotonic s): the start of the latencies its client sees.
    arrived_at: float
    backend: Backend | None = None
    length_request: LengthRequest | None = None
    prediction: Prediction | None = None
    #: What made `prediction` (and learns from the answer): the cheap predictor or the query window's
    #: `--predictor`; None: `--predictor`.
    predicted_by: Predictor | None = None
    #: The prediction made in the background, only to learn from, when nothing waited.
    deferred: asyncio.Task[Prediction | None] | None = None
    prediction_s: float = 0.0
    queue_wait_s: float = 0.0
    #: When the request went upstream, and when its first streamed bytes came back (monotonic s):
    #: the engine's own TTFT and E2E, which the policy's service-time estimate learns from, and
    #: the ends of the queue time and TTFT its client sees.
    sent_at: float | None = None
    first_bytes_at: float | None = None
    priority: int | None = None
    upstream: aiohttp.ClientResponse | None = None
    #: The whole upstream body, for a response that is not relayed as a stream.
    answer: bytes = b""
    #: `usage` of a plain 200 answer.
    usage: Any = None
    #: Output tokens per choice of a completed answer (from its usage).
    output_tokens: int | None = None
    # What the client got:
    status: int = 499
    response_started: bool = False
    response_complete: bool = False
    # Preemption (queue modes with --preempt), for a request that can be resumed exactly:
    #: Its runs upstream stitched into the client's one answer; None: not preemptible.
    stitcher: Stitcher | None = None
    #: Its predicted length distribution, re-read as tokens come (`predict.remaining`).
    length: LengthDistribution | None = None
    #: The hold group of its current run upstream (slot, connection), closed to preempt it.
    run: ExitStack | None = None
    #: The preemptor asked it to yield its seat at its next chunk.
    yield_requested: bool = False
    preemptions: int = 0
    #: Every release callback registered since the request was accepted, newest last.
    _held: ExitStack = field(default_factory=ExitStack, init=False, repr=False)

    def hold(self) -> ExitStack:
        """A new group of things held: register each release on it the moment its thing is acquired.

        Closing the group gives them back early (a failed try, a move to another backend);
        `release_all` gives back what is still held however the request ends. The releases
        are synchronous, so unwinding them cannot be interrupted by a cancellation.
        """
        return self._held.enter_context(ExitStack())

    def release_all(self) -> None:
        """Give back everything still held, newest first (closed groups are empty)."""
        self._held.close()

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def relays_stream(self) -> bool:
        """The upstream answer is an event stream to relay as it comes (else it is read whole first)."""
        up = self.upstream
        return (self.stream or self.stitcher is not None) and up is not None and up.status == 200 and \
            up.headers.get("content-type", "").startswith("text/event-stream")

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    def lengthwise_headers(self) -> list[tuple[bytes, bytes]]:
        """The x-lengthwise-* headers: what the gateway decided for this request."""
        out = [(headers.REQUEST_ID.encode(), self.id.encode())]
        if self.backend is not None:
            out.append((headers.BACKEND.encode(), str(self.backend.index).encode()))
        p = self.prediction
        if p is not None:
            source = f"{p.source};fallback" if p.is_fallback else p.source
            out += [
                (headers.PREDICTED_TOKENS.encode(), f"{p.tokens:.1f}".encode()),
                (headers.PREDICTOR.encode(), source.encode("latin-1", "replace")),
                (headers.PREDICTION_MS.encode(), f"{self.prediction_s * 1e3:.1f}".encode()),
                (headers.QUEUE_MS.encode(), f"{self.queue_wait_s * 1e3:.1f}".encode()),
            ]
        if self.priority is not None:
            out.append((headers.PRIORITY.encode(), str(self.priority).encode()))
        return out
