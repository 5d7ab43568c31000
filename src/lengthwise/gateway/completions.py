"""The completion endpoints: each request is predicted, routed, admitted and forwarded.

    predict (same backend as the real request) → priority mode: forward at once with the
    engine priority of the policy key; queue mode: wait in the backend's queue for one
    of its N slots, admitted in policy order; both: wait, then forward with the priority.

A request that nothing waits ahead of is not held for its prediction (`predicting`).

The response's body or stream is the backend's, byte for byte; the gateway adds only
`x-lengthwise-*` headers. Every accepted request gets exactly one response, and gives
back what it holds (slot, predicted work, upstream connection) however it ends: each is
registered on the request's `Flight.hold()` groups the moment it is acquired.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from starlette.types import Receive, Scope, Send

from lengthwise.core.policy import Job, Policy
from lengthwise.core.usage import cached_tokens
from lengthwise.gateway.asgi import ClientGone, disconnected, header_bytes, read_body, send_error, send_response
from lengthwise.gateway.auth import ApiKeys
from lengthwise.gateway.backends import Backend, BackendPool, affinity_key
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.errors import GatewayError
from lengthwise.gateway.flight import Flight
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.predicting import Predicting
from lengthwise.gateway.preemptor import Preemptor
from lengthwise.gateway.priority import PriorityMap
from lengthwise.gateway.proxy import StreamTap, UpstreamFailed, forward_headers, open_upstream, response_headers
from lengthwise.gateway.resumable import continuation_body, upstream_body
from lengthwise.gateway.retry import Retry
from lengthwise.gateway.scheduler import BackendGone, QueueFull, Scheduler
from lengthwise.gateway.validation import parse_body
from lengthwise.predict.base import Predictor

log = logging.getLogger("lengthwise.gateway")


@dataclass(eq=False, kw_only=True)
class Completions:
    """The raw ASGI endpoint of /v1/completions and /v1/chat/completions (raw, so that it sees a
    client disconnect at once, even while a request waits), with the gateway's parts it uses."""

    config: GatewayConfig
    policy: Policy
    pool: BackendPool
    scheduler: Scheduler | None
    metrics: GatewayMetrics
    predictor: Predictor
    engine_priority: PriorityMap | None
    api_keys: ApiKeys
    clock: Callable[[], float]
    #: Preempts long running requests for short waiting ones (queue modes with --preempt); None: never.
    preemptor: Preemptor | None = None
    #: The query-window rule's cheap predictor (`--query-window`); None: the rule is off.
    cheap_predictor: Predictor | None = None
    #: The pooled connections to the backends; the gateway's lifespan sets it.
    session: aiohttp.ClientSession | None = None
    _ids: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False)
    _id_prefix: str = field(default_factory=lambda: secrets.token_hex(4), init=False)
    _timeout: aiohttp.ClientTimeout = field(init=False)
    #: Predictions awaited or made in the background, and learning from completions.
    predicting: Predicting = field(init=False)

    def __post_init__(self) -> None:
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.connect_timeout_s,
                                              sock_read=self.config.read_timeout_s)
        self.predicting = Predicting(config=self.config, predictor=self.predictor, metrics=self.metrics,
                                     scheduler=self.scheduler, cheap=self.cheap_predictor)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = "chat" if scope["path"].endswith("/chat/completions") else "completion"
        arrival, arrived_at = self.clock(), time.monotonic()
        try:
            if header_bytes(scope) > self.config.max_header_bytes:
                raise GatewayError(431, f"the request headers are larger than {self.config.max_header_bytes} bytes",
                                   code="headers_too_large")
            self.api_keys.check(scope)
            raw = await read_body(scope, receive, self.config.max_body_bytes)
            body = parse_body(endpoint, raw)
            if not self.pool.model_exists(body.get("model")):
                raise GatewayError(404, f"the model '{body['model']}' does not exist", code="model_not_found",
                                   param="model")
        except ClientGone:
            self.metrics.requests.labels(endpoint, "499").inc()
            return
        except GatewayError as e:
            self.metrics.requests.labels(endpoint, str(e.status)).inc()
            await send_error(send, e)
            return
        rid = f"lw-{self._id_prefix}-{next(self._ids)}"
        flight = Flight(rid, endpoint, body, raw, Job(rid, arrival), scope["headers"], arrived_at)
        work = asyncio.ensure_future(self._serve(flight, send))
        gone = asyncio.ensure_future(disconnected(receive))
        # The client left before its response ended: leave the queue, abort upstream.
        gone.add_done_callback(lambda _: flight.response_complete or work.cancel())
        try:
            await work
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the server is stopping: not the client leaving
        finally:
            gone.cancel()
            work.cancel()

    async def _serve(self, f: Flight, send: Send) -> None:
        try:
            await self._dispatch(f)
            if f.relays_stream and f.stitcher is not None:
                await self._relay_runs(f, send)
            elif f.relays_stream:
                await self._relay_stream(f, send)
            else:
                await self._relay_body(f, send)
        except GatewayError as e:
            await self._send_error(f, send, e)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request %s: unexpected error", f.id)
            await self._send_error(f, send, GatewayError(500, "internal gateway error", code="internal_error"))
        finally:
            f.release_all()
            self._record(f)

    async def _dispatch(self, f: Flight) -> None:
        """Route, predict, admit and open the upstream response, trying other backends on failure."""
        backend = f.backend = self._choose(f)
        waiting = f.hold()  # counted as waiting on its backend until sent there
        waiting.enter_context(_counted(backend, "waiting"))
        await self.predicting.predict(f)
        if self.preemptor is not None:
            self.preemptor.prepare(f)
        assignment = self._assign(f, backend)
        retry = Retry(functools.partial(self._choose, f))
        while True:
            attempt = f.hold()  # this try's slot and upstream connection
            try:
                if self.scheduler is not None:
                    await self._admit(f, attempt)
                waiting.close()
                await self._open(f, attempt, None if f.stitcher is None else upstream_body(f.body))
                f.run = attempt
                return
            except BackendGone:
                moved: Backend | None = retry.elsewhere()
            except UpstreamFailed as e:
                attempt.close()
                self.metrics.upstream_errors.labels(backend.url, e.kind).inc()
                if e.connect:
                    self.pool.mark_down(backend, str(e))
                log.warning("request %s: backend %d failed (%s)", f.id, backend.index, e)
                moved = retry.after_failure(backend, e)
            if moved is not None:
                self.metrics.retries.inc()
                assignment.close()
                assignment = self._assign(f, moved)
                backend = moved
            waiting.close()
            waiting = f.hold()
            waiting.enter_context(_counted(backend, "waiting"))

    def _choose(self, f: Flight, exclude: Collection[Backend] = ()) -> Backend:
        affinity = affinity_key(f.endpoint, f.body, self.config.affinity_prefix_chars) if len(self.pool) > 1 else ""
        backend = self.pool.choose(f.model, affinity, exclude)
        if backend is None:
            served = "" if f.model is None else f" serving '{f.model}'"
            raise GatewayError(503, f"no backend{served} is available", code="no_backend")
        return backend

    def _assign(self, f: Flight, backend: Backend) -> contextlib.ExitStack:
        """Route `f` to `backend`: its predicted work counts there until the group returned is closed
        (when it moves to another backend, or when the flight ends)."""
        assert f.prediction is not None
        held = f.hold()
        self.pool.assign(backend, f.prediction.tokens)
        held.callback(self.pool.unassign, backend, f.prediction.tokens)
        f.backend = backend
        return held

    async def _admit(self, f: Flight, attempt: contextlib.ExitStack, requeued: bool = False) -> None:
        assert self.scheduler is not None and f.backend is not None
        started = time.monotonic()
        query = functools.partial(self.predicting.self_predict, f) if self.cheap_predictor is not None else None
        try:
            release = await self.scheduler.admit(f.job, f.backend, requeued=requeued, query=query)
        except QueueFull:
            raise GatewayError(429, "the gateway's queue is full; retry later", code="queue_full",
                               headers={"retry-after": str(self.config.retry_after_s)}) from None
        finally:
            f.queue_wait_s += time.monotonic() - started
        attempt.callback(release)

    async def _open(self, f: Flight, attempt: contextlib.ExitStack, body: dict[str, Any] | None = None) -> None:
        """Send the request upstream (the client's bytes, or `body`: a preemptible request's run); for a
        plain response, read and check all of it too."""
        assert self.session is not None and f.backend is not None
        raw, sent = (f.raw, f.body) if body is None else (b"", body)
        payload = raw or json.dumps(sent).encode()
        if self.config.sends_priority and self.engine_priority is not None:
            f.priority = self.engine_priority(self.policy.key(f.job, self.clock()))
            payload = with_priority(raw, sent, f.priority)
        url = f.backend.url + ("/v1/chat/completions" if f.endpoint == "chat" else "/v1/completions")
        headers = forward_headers(f.headers, self.config.backend_api_key)
        attempt.enter_context(_counted(f.backend, "inflight"))
        f.sent_at = time.monotonic()
        f.upstream = await open_upstream(self.session, url, payload, headers, self._timeout)
        # Unread bytes left: closing the connection aborts the request upstream.
        attempt.callback(f.upstream.close)
        f.backend.progressed()
        if not f.relays_stream:
            await self._read_whole(f)

    async def _read_whole(self, f: Flight) -> None:
        """Read a plain response; a cut or non-JSON 200 counts as a failed try (nothing was sent yet)."""
        upstream = f.upstream
        assert upstream is not None
        try:
            f.answer = await upstream.read()
            f.backend.progressed()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise UpstreamFailed("disconnect", f"the response was cut: {type(e).__name__}") from e
        if upstream.status == 200:
            try:
                f.usage = json.loads(f.answer).get("usage")
            except (ValueError, AttributeError):
                raise UpstreamFailed("invalid", "the backend's answer is not JSON") from None

    async def _relay_body(self, f: Flight, send: Send) -> None:
        upstream = f.upstream
        assert upstream is not None
        f.status = upstream.status
        f.response_started = True
        await send_response(send, upstream.status, response_headers(upstream) + f.lengthwise_headers(), f.answer)
        f.response_complete = True
        if upstream.status == 200:
            self._learn(f, f.usage)

    async def _relay_stream(self, f: Flight, send: Send) -> None:
        upstream = f.upstream
        assert upstream is not None
        tap = StreamTap()
        f.status = 200
        f.response_started = True
        await send({"type": "http.response.start", "status": 200,
                    "headers": response_headers(upstream) + f.lengthwise_headers()})
        try:
            async for chunk in upstream.content.iter_any():
                f.backend.progressed()
                if f.first_bytes_at is None:
                    f.first_bytes_at = time.monotonic()
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tap.feed(chunk)
                if tap.done and not f.response_complete:
                    # The client has the whole answer once [DONE] is relayed, and many clients hang
                    # up right then: from here on that is not a client leaving early (499).
                    f.response_complete = True
                    self._learn(f, tap.result())
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._cut(f, e) from e
        if not f.response_complete:  # a stream without [DONE]: its end is the answer's end
            f.response_complete = True
            self._learn(f, tap.result())
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _cut(self, f: Flight, e: Exception) -> GatewayError:
        assert f.backend is not None
        self.metrics.upstream_errors.labels(f.backend.url, "cut").inc()
        log.warning("request %s: backend %d cut the stream (%s)", f.id, f.backend.index, type(e).__name__)
        return GatewayError(502, "the backend ended the stream early", code="upstream_stream_cut")

    async def _relay_runs(self, f: Flight, send: Send) -> None:
        """A preemptible request: its runs upstream, stitched into one answer for the client."""
        stitcher, upstream = f.stitcher, f.upstream
        assert stitcher is not None and upstream is not None
        f.status = 200
        if stitcher.client_streams:
            f.response_started = True
            await send({"type": "http.response.start", "status": 200,
                        "headers": response_headers(upstream) + f.lengthwise_headers()})
        while await self._run(f, send):
            await self._resume(f)
        tail = stitcher.finish()
        if stitcher.client_streams:
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        else:
            f.response_started = True
            await send_response(send, 200, [(b"content-type", b"application/json")] + f.lengthwise_headers(),
                                stitcher.body())
        if not f.response_complete:
            f.response_complete = True
            self._learn(f, stitcher.usage())

    async def _run(self, f: Flight, send: Send) -> bool:
        """Relay one run upstream; True when it ended because the request yields its seat."""
        stitcher, upstream, backend, preemptor = f.stitcher, f.upstream, f.backend, self.preemptor
        assert stitcher is not None and upstream is not None and backend is not None and f.run is not None
        assert preemptor is not None
        stitcher.begin()
        preemptor.started(f)
        f.run.callback(preemptor.stopped, f)
        checked, resumed, started = stitcher.transcript.generated, stitcher.runs > 1, time.monotonic()
        try:
            async for chunk in upstream.content.iter_any():
                backend.progressed()
                if f.first_bytes_at is None:
                    f.first_bytes_at = time.monotonic()
                if resumed:  # the continuation's prefill: vLLM sends a stream's headers at once
                    preemptor.resumed(time.monotonic() - started)
                    resumed = False
                out = stitcher.take(chunk)
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                if stitcher.done:
                    if stitcher.client_streams and not f.response_complete:  # [DONE] relayed, as above
                        f.response_complete = True
                        self._learn(f, stitcher.usage())
                elif f.yield_requested:
                    return True
                elif stitcher.transcript.generated - checked >= preemptor.settings.check_every:
                    checked = stitcher.transcript.generated
                    preemptor.consider(backend)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise self._cut(f, e) from e
        usage = stitcher.run_usage
        if stitcher.runs > 1 and usage is not None:
            self.metrics.resume_prompt_tokens.inc(int(usage.get("prompt_tokens") or 0))
            self.metrics.resume_cached_tokens.inc(cached_tokens(usage) or 0)
        return False

    async def _resume(self, f: Flight) -> None:
        """End `f`'s run (closing the connection aborts it upstream; its seat admits the queue's head),
        wait in the queue again, and start its continuation."""
        assert f.stitcher is not None and f.run is not None and self.preemptor is not None
        self.preemptor.preempted(f)
        f.yield_requested = False
        f.run.close()
        attempt, first_sent = f.hold(), f.sent_at
        try:
            await self._admit(f, attempt, requeued=True)
            await self._open(f, attempt, continuation_body(f.endpoint, f.body, f.stitcher.transcript))
        except (BackendGone, UpstreamFailed) as e:
            raise GatewayError(502, f"the backend failed while resuming a preempted request: {e}",
                               code="resume_failed") from e
        f.run, f.sent_at = attempt, first_sent  # queue time counts to the first run
        if not f.relays_stream:
            assert f.upstream is not None
            log.warning("request %s: the backend refused its continuation (%d): %r", f.id, f.upstream.status,
                        f.answer[:300])
            raise GatewayError(502, f"the backend refused to resume a preempted request ({f.upstream.status})",
                               code="resume_failed")

    async def _send_error(self, f: Flight, send: Send, e: GatewayError) -> None:
        if f.response_complete:
            return
        f.status = e.status
        if f.response_started:  # a stream under way: end it with an error event
            await send({"type": "http.response.body", "body": e.sse_event(), "more_body": False})
        else:
            await send_error(send, e, f.lengthwise_headers())
        f.response_complete = True

    def _learn(self, f: Flight, usage: Any) -> None:
        """Metrics from the response's usage, and the actual length for the predictor to learn from."""
        assert f.prediction is not None
        if not isinstance(usage, dict):
            self.metrics.usage_missing.inc()
            return
        actual = self.metrics.completed(f.prediction.tokens, usage, f.queue_wait_s, f.body.get("n") or 1)
        if actual is not None:
            f.output_tokens = actual
            self.predicting.learn(f, actual)
            self._time_service(f, usage, actual)

    def _time_service(self, f: Flight, usage: dict[str, Any], actual: int) -> None:
        """Teach the policy's service-time estimate (if it has one) the engine's prefill and decode
        speed from a streamed answer's TTFT and E2E. Only where the gateway admits (queue modes): in
        priority mode a TTFT also holds the wait in the engine's own queue, which is not service."""
        service = self.policy.service
        if service is None or self.scheduler is None or f.sent_at is None or f.first_bytes_at is None or \
                (f.stitcher is not None and f.stitcher.preempted):  # its times hold waits between runs
            return
        assert f.backend is not None
        now = time.monotonic()
        service.observe(int(usage.get("prompt_tokens") or 0), cached_tokens(usage) or 0, actual,
                        f.first_bytes_at - f.sent_at, now - f.sent_at, max(f.backend.inflight, 1))

    def _record(self, f: Flight) -> None:
        """Count the answered request (499: the client went away first), and log it at debug level."""
        if not f.response_complete:
            f.status = 499
        self.metrics.requests.labels(f.endpoint, str(f.status)).inc()
        self.metrics.answered(f, time.monotonic())
        if log.isEnabledFor(logging.DEBUG):
            p = f.prediction
            log.debug("request %s %s model=%s backend=%s predicted=%s fallback=%s queue_ms=%.1f status=%d", f.id,
                      f.endpoint, f.model, f.backend.index if f.backend else None,
                      f"{p.tokens:.1f}" if p else None, p.fallback_reason if p else None, f.queue_wait_s * 1e3,
                      f.status)


@contextlib.contextmanager
def _counted(backend: Backend, state: Literal["waiting", "inflight"]) -> Iterator[None]:
    """Count a request in `backend.waiting` (routed there, not sent yet) or `backend.inflight` (from
    before it is sent until its response ends) while the context lasts."""
    setattr(backend, state, getattr(backend, state) + 1)
    try:
        yield
    finally:
        setattr(backend, state, getattr(backend, state) - 1)


def with_priority(raw: bytes, body: dict[str, Any], priority: int) -> bytes:
    """The client's body with `priority` set: appended to its bytes (cheaper than re-encoding a
    long prompt), or re-encoded when the client sent a priority of its own."""
    if "priority" in body or not raw.lstrip().startswith(b"{"):  # or not UTF-8 (json reads UTF-16/32 too)
        return json.dumps({**body, "priority": priority}, separators=(",", ":")).encode()
    end = raw.rstrip().rindex(b"}")  # the body parsed as a JSON object: it ends with its closing brace
    separator = b"," if body else b""
    # join, not %-formatting: one copy of the body (an 8 MB prompt: 0.5 ms instead of 15-35 ms)
    return b"".join((memoryview(raw)[:end], separator, b'"priority":%d}' % priority))
