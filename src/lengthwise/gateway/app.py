"""The gateway: each completion request is predicted, routed, admitted and forwarded.

    predict (same backend as the real request) → priority mode: forward at once with the
    engine priority of the policy key; queue mode: wait in the backend's queue for one
    of its N slots, admitted in policy order; both: wait, then forward with the priority.

The response's body or stream is the backend's, byte for byte; the gateway adds only
`x-lengthwise-*` headers. Every accepted request gets exactly one response, and gives
back what it holds (slot, predicted work, upstream connection) however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lengthwise.gateway.backends import Backend, BackendPool, affinity_key
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.errors import GatewayError
from lengthwise.gateway.flight import Flight
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.predictors import build_predictor
from lengthwise.gateway.priority import PriorityMap
from lengthwise.gateway.proxy import StreamTap, UpstreamFailed, forward_headers, open_upstream, response_headers
from lengthwise.gateway.scheduler import BackendGone, QueueFull, Scheduler
from lengthwise.gateway.validation import parse_body
from lengthwise.core.policy import Job, Policy, make_policy
from lengthwise.predict.base import LengthRequest, Prediction, Predictor

log = logging.getLogger("lengthwise.gateway")

Scope = dict[str, Any]


#: Status and words for a request whose last backend failed: no addresses or internals in them.
_FAILURES = {
    "connect": (503, "could not be reached"),
    "timeout": (504, "did not answer in time"),
    "disconnect": (502, "closed the connection before answering"),
    "invalid": (502, "sent an answer that is not valid HTTP or JSON"),
}


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class Gateway:
    """The gateway's parts and its request flow; `.app` is the ASGI app to serve.

    `predictor` and `policy` override the ones `config` names (tests, embedding).
    """

    def __init__(self, config: GatewayConfig, *, predictor: Predictor | None = None,
                 policy: Policy | None = None) -> None:
        self.config = config
        self.policy = policy or make_policy(config.policy)
        self.scheduler = Scheduler(self.policy, config.max_inflight, config.max_queue, self.clock) \
            if config.queues else None
        self.pool = BackendPool(config.backend_urls, slack_tokens=config.affinity_slack_tokens,
                                on_down=self.scheduler.evict if self.scheduler else None)
        #: The engine's priority scale (prediction queries use it in every mode).
        self.engine_priority = PriorityMap.for_config(config)
        self.metrics = GatewayMetrics(self.pool, self.scheduler)
        self._backend_headers = {"authorization": f"Bearer {config.backend_api_key}"} \
            if config.backend_api_key else {}
        #: The predictor's own client (httpx, as the predictors take it), with the backend key.
        self._predict_client = None if predictor else httpx.AsyncClient(
            headers=self._backend_headers, timeout=config.prediction_timeout_s,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        urgent = self.engine_priority.urgent if self.engine_priority else None
        self.predictor: Predictor = predictor or build_predictor(config, self._predict_client, urgent)
        self._predictor_status = getattr(self.predictor, "status", None)
        if callable(self._predictor_status):
            self.metrics.watch_predictor(self._predictor_status)
        self._epoch = time.monotonic()
        self._ids = itertools.count()
        self._id_prefix = secrets.token_hex(4)
        self._api_keys = [key.encode() for key in config.api_keys]
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s,
                                              sock_read=config.read_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        starlette = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/lengthwise/status", self._status, methods=["GET"]),
            ],
            lifespan=self._lifespan,
            exception_handlers={HTTPException: _http_exception},
        )
        #: The ASGI app to serve.
        self.app = _CompletionsFirst(self._completion_endpoint, starlette)

    def clock(self) -> float:
        """Seconds since the gateway started: job arrivals and policy keys use it."""
        return time.monotonic() - self._epoch

    # ---- life cycle -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # Unlimited connections: admission is the scheduler's job, not the pool's. Idle
        # connections close before uvicorn's 5 s keep-alive would close them under us.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            self._session = session
            await self._probe_all()
            health = asyncio.create_task(self._health_loop())
            log.info("gateway ready: %d backend(s), mode %s, policy %s, predictor %s", len(self.pool),
                     self.config.mode, self.policy.name, self.predictor.name)
            try:
                yield
            finally:
                health.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await health
                if self._predict_client is not None:
                    await self._predict_client.aclose()

    async def _probe_all(self) -> None:
        assert self._session is not None
        await self.pool.probe_all(self._session, self.config.health_path, self._backend_headers,
                                  self.config.health_timeout_s)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self._probe_all()
            except Exception:  # a bug in a check must not end the checks
                log.exception("health check round failed")

    # ---- small endpoints ----------------------------------------------------------------

    async def _models(self, request: Request) -> Response:
        try:
            self._authorize(request.scope)
        except GatewayError as e:
            return e.response()
        if not any(b.model_cards for b in self.pool.backends):
            await self._probe_all()
        listing = self.pool.model_list()
        if not listing["data"]:
            return GatewayError(503, "no backend answered /v1/models", code="no_backend").response()
        return JSONResponse(listing)

    async def _health(self, request: Request) -> Response:
        healthy = sum(b.healthy for b in self.pool.backends)
        return JSONResponse({"status": "ok" if healthy else "unavailable", "healthy_backends": healthy,
                             "backends": len(self.pool)}, status_code=200 if healthy else 503)

    async def _metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _status(self, request: Request) -> Response:
        """What schedules: mode, policy, predictor, and the predictor's own status if it has one
        (an automatic choice gives its evidence there)."""
        status = self._predictor_status() if callable(self._predictor_status) else None
        return JSONResponse({"mode": self.config.mode, "policy": self.policy.name, "predictor": self.predictor.name,
                             "status": status})

    def _authorize(self, scope: Scope) -> None:
        if not self._api_keys:
            return
        token = b""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
        matched = False
        for key in self._api_keys:  # compare with every key: time does not tell which one matched
            matched |= hmac.compare_digest(token, key)
        if not matched:
            raise GatewayError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                               code="invalid_api_key", headers={"www-authenticate": "Bearer"})

    # ---- completions ----------------------------------------------------------------------

    async def _completion_endpoint(self, scope: Scope, receive: Any, send: Any) -> None:
        """Raw ASGI: the gateway must see a client disconnect at once, even while a request waits."""
        endpoint = "chat" if scope["path"].endswith("/chat/completions") else "completion"
        arrival = self.clock()
        try:
            if sum(len(k) + len(v) for k, v in scope["headers"]) > self.config.max_header_bytes:
                raise GatewayError(431, f"the request headers are larger than {self.config.max_header_bytes} bytes",
                                   code="headers_too_large")
            self._authorize(scope)
            raw = await _read_body(scope, receive, self.config.max_body_bytes)
            body = parse_body(endpoint, raw)
            if not self.pool.model_exists(body.get("model")):
                raise GatewayError(404, f"the model '{body['model']}' does not exist", code="model_not_found",
                                   param="model")
        except ClientGone:
            self.metrics.requests.labels(endpoint, "499").inc()
            return
        except GatewayError as e:
            self.metrics.requests.labels(endpoint, str(e.status)).inc()
            await _send_response(send, e.status, [(b"content-type", b"application/json")] + _encode(e.headers),
                                 json.dumps(e.payload()).encode())
            return
        rid = f"lw-{self._id_prefix}-{next(self._ids)}"
        flight = Flight(rid, endpoint, body, raw, Job(rid, arrival), scope["headers"])
        work = asyncio.ensure_future(self._serve(flight, send))
        gone = asyncio.ensure_future(_disconnected(receive))
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

    async def _serve(self, f: Flight, send: Any) -> None:
        try:
            await self._dispatch(f)
            if f.relays_stream:
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
            self._finish(f)

    async def _dispatch(self, f: Flight) -> None:
        """Route, predict, admit and open the upstream response, trying other backends on failure."""
        f.backend = self._choose(f)
        await self._predict(f)
        f.job.predicted_tokens = f.prediction.tokens
        f.job.prompt_tokens = int(f.prediction.features.get("prompt_tokens", 0))
        self._assign(f, f.backend)
        while True:
            try:
                if self.scheduler is not None:
                    await self._admit(f)
                await self._open(f)
                return
            except BackendGone:
                self._reroute(f, None)
            except UpstreamFailed as e:
                self.metrics.upstream_errors.labels(f.backend.url, e.kind).inc()
                self._release_slot(f)
                strikes = f.strikes.get(f.backend, 0) + (1 if e.kind == "disconnect" else 2)
                f.strikes[f.backend] = strikes
                if e.connect:
                    self.pool.mark_down(f.backend, str(e))
                log.warning("request %s: backend %d failed (%s)", f.id, f.backend.index, e)
                if strikes >= 2:  # else a stale keep-alive connection, maybe: the same backend once more
                    self._reroute(f, e)

    def _choose(self, f: Flight, exclude: tuple[Backend, ...] = ()) -> Backend:
        affinity = affinity_key(f.endpoint, f.body, self.config.affinity_prefix_chars) if len(self.pool) > 1 else ""
        backend = self.pool.choose(f.model, affinity, exclude)
        if backend is None:
            served = "" if f.model is None else f" serving '{f.model}'"
            raise GatewayError(503, f"no backend{served} is available", code="no_backend")
        return backend

    def _reroute(self, f: Flight, failure: UpstreamFailed | None) -> None:
        """Move the request to another backend; when none is left, fail it by its last failure."""
        exclude = tuple(b for b, strikes in f.strikes.items() if strikes >= 2)
        try:
            backend = self._choose(f, exclude)
        except GatewayError:
            if failure is None:
                raise
            status, what = _FAILURES[failure.kind]
            raise GatewayError(status, f"the backend {what}, and no other backend could take the request",
                               code="backend_unavailable") from None
        self.metrics.retries.inc()
        self._unassign(f)
        self._assign(f, backend)

    async def _predict(self, f: Flight) -> None:
        assert f.backend is not None
        f.length_request = LengthRequest(f.endpoint, f.body, f.id, f.backend.url)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.config.prediction_timeout_s):
                prediction = await self.predictor.predict(f.length_request)
            outcome = "fallback" if prediction.is_fallback else "ok"
        except TimeoutError:
            prediction = self._fallback(f"no prediction within {self.config.prediction_timeout_s:g} s")
            outcome = "timeout"
        except Exception as e:  # predictors never raise, by contract; a buggy one must not cost the request
            log.exception("request %s: predictor %s raised", f.id, self.predictor.name)
            prediction = self._fallback(f"predictor raised {type(e).__name__}")
            outcome = "fallback"
        if not math.isfinite(prediction.tokens):
            prediction = self._fallback(f"predictor returned {prediction.tokens}")
            outcome = "fallback"
        f.prediction = prediction
        f.prediction_s = time.monotonic() - started
        self.metrics.predictions.labels(self.predictor.name, outcome).inc()
        self.metrics.prediction_seconds.observe(f.prediction_s)
        self.metrics.predicted_tokens.observe(prediction.tokens)

    def _fallback(self, reason: str) -> Prediction:
        return Prediction(self.config.fallback_tokens, self.predictor.name, fallback_reason=reason)

    async def _admit(self, f: Flight) -> None:
        assert self.scheduler is not None and f.backend is not None
        started = time.monotonic()
        try:
            await self.scheduler.admit(f.job, f.backend)
        except QueueFull:
            raise GatewayError(429, "the gateway's queue is full; retry later", code="queue_full",
                               headers={"retry-after": str(self.config.retry_after_s)}) from None
        finally:
            f.queue_wait_s += time.monotonic() - started
        f.slot = True
        self.metrics.queue_wait.observe(f.queue_wait_s)

    async def _open(self, f: Flight) -> None:
        """Send the request upstream; for a plain response, read and check all of it too."""
        assert self._session is not None and f.backend is not None
        payload = f.raw
        if self.config.sends_priority and self.engine_priority is not None:
            f.priority = self.engine_priority(self.policy.key(f.job, self.clock()))
            payload = _with_priority(f.raw, f.body, f.priority)
        url = f.backend.url + ("/v1/chat/completions" if f.endpoint == "chat" else "/v1/completions")
        headers = forward_headers(f.headers, self.config.backend_api_key)
        f.backend.inflight += 1
        try:
            f.upstream = await open_upstream(self._session, url, payload, headers, self._timeout)
        except (UpstreamFailed, asyncio.CancelledError):  # or the client left while the headers were awaited
            f.backend.inflight -= 1
            raise
        if not f.relays_stream:
            await self._read_whole(f)

    async def _read_whole(self, f: Flight) -> None:
        """Read a plain response; a cut or non-JSON 200 counts as a failed try (nothing was sent yet)."""
        upstream = f.upstream
        assert upstream is not None
        try:
            f.answer = await upstream.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            self._close_upstream(f)
            raise UpstreamFailed("disconnect", f"the response was cut: {type(e).__name__}") from e
        if upstream.status == 200:
            try:
                f.usage = json.loads(f.answer).get("usage")
            except (ValueError, AttributeError):
                self._close_upstream(f)
                raise UpstreamFailed("invalid", "the backend's answer is not JSON") from None

    async def _relay_body(self, f: Flight, send: Any) -> None:
        upstream = f.upstream
        assert upstream is not None
        f.status = upstream.status
        f.response_started = True
        await _send_response(send, upstream.status, response_headers(upstream) + f.lengthwise_headers(), f.answer)
        f.response_complete = True
        if upstream.status == 200:
            self._learn(f, f.usage)

    async def _relay_stream(self, f: Flight, send: Any) -> None:
        upstream = f.upstream
        assert upstream is not None
        tap = StreamTap()
        f.status = 200
        f.response_started = True
        await send({"type": "http.response.start", "status": 200,
                    "headers": response_headers(upstream) + f.lengthwise_headers()})
        try:
            async for chunk in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                tap.feed(chunk)
                if tap.done and not f.response_complete:
                    # The client has the whole answer once [DONE] is relayed, and many clients hang
                    # up right then: from here on that is not a client leaving early (499).
                    f.response_complete = True
                    self._learn(f, tap.result())
        except (aiohttp.ClientError, TimeoutError) as e:
            assert f.backend is not None
            self.metrics.upstream_errors.labels(f.backend.url, "cut").inc()
            log.warning("request %s: backend %d cut the stream (%s)", f.id, f.backend.index, type(e).__name__)
            raise GatewayError(502, "the backend ended the stream early", code="upstream_stream_cut") from e
        if not f.response_complete:  # a stream without [DONE]: its end is the answer's end
            f.response_complete = True
            self._learn(f, tap.result())
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_error(self, f: Flight, send: Any, e: GatewayError) -> None:
        if f.response_complete:
            return
        f.status = e.status
        if f.response_started:  # a stream under way: end it with an error event
            await send({"type": "http.response.body", "body": e.sse_event(), "more_body": False})
        else:
            headers = [(b"content-type", b"application/json")] + _encode(e.headers) + f.lengthwise_headers()
            await _send_response(send, e.status, headers, json.dumps(e.payload()).encode())
        f.response_complete = True

    def _learn(self, f: Flight, usage: Any) -> None:
        """Metrics and the predictor's calibration from the response's usage."""
        assert f.prediction is not None and f.length_request is not None
        if not isinstance(usage, dict):
            self.metrics.usage_missing.inc()
            return
        actual = self.metrics.completed(f.prediction.tokens, usage, f.queue_wait_s, f.body.get("n") or 1)
        if actual is None:
            return
        try:
            self.predictor.observe(f.length_request, f.prediction, actual)
        except Exception:
            log.exception("request %s: predictor.observe failed", f.id)

    # ---- what a flight holds ----------------------------------------------------------------

    def _assign(self, f: Flight, backend: Backend) -> None:
        assert f.prediction is not None
        f.backend = backend
        f.assigned = f.prediction.tokens
        self.pool.assign(backend, f.assigned)

    def _unassign(self, f: Flight) -> None:
        if f.assigned is not None and f.backend is not None:
            self.pool.unassign(f.backend, f.assigned)
            f.assigned = None

    def _release_slot(self, f: Flight) -> None:
        if f.slot and self.scheduler is not None and f.backend is not None:
            f.slot = False
            self.scheduler.release(f.backend)

    def _close_upstream(self, f: Flight) -> None:
        if f.upstream is not None and f.backend is not None:
            f.upstream.close()  # unread bytes left: closing the connection aborts the request upstream
            f.upstream = None
            f.backend.inflight -= 1

    def _finish(self, f: Flight) -> None:
        self._close_upstream(f)
        self._release_slot(f)
        self._unassign(f)
        if not f.response_complete:
            f.status = 499  # the client went away first
        self.metrics.requests.labels(f.endpoint, str(f.status)).inc()
        if log.isEnabledFor(logging.DEBUG):
            p = f.prediction
            log.debug("request %s %s model=%s backend=%s predicted=%s fallback=%s queue_ms=%.1f status=%d", f.id,
                      f.endpoint, f.model, f.backend.index if f.backend else None,
                      f"{p.tokens:.1f}" if p else None, p.fallback_reason if p else None, f.queue_wait_s * 1e3,
                      f.status)


class _CompletionsFirst:
    """POSTs to the completion endpoints go straight to the gateway's handler, the rest through
    Starlette: its router and middleware cost a noticeable share of a proxied request's CPU."""

    PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

    def __init__(self, completions: Any, app: Starlette) -> None:
        self.completions = completions
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
        elif scope["method"] == "POST":
            await self.completions(scope, receive, send)
        else:
            error = GatewayError(405, "use POST", headers={"allow": "POST"})
            await error.response()(scope, receive, send)


def create_app(config: GatewayConfig, **overrides: Any) -> Starlette:
    """The gateway's ASGI app (see `Gateway` for `predictor=` and `policy=`)."""
    return Gateway(config, **overrides).app


def _with_priority(raw: bytes, body: dict[str, Any], priority: int) -> bytes:
    """The client's body with `priority` set: appended to its bytes (cheaper than re-encoding a
    long prompt), or re-encoded when the client sent a priority of its own."""
    if "priority" in body or not raw.lstrip().startswith(b"{"):  # or not UTF-8 (json reads UTF-16/32 too)
        return json.dumps({**body, "priority": priority}, separators=(",", ":")).encode()
    end = raw.rstrip().rindex(b"}")  # the body parsed as a JSON object: it ends with its closing brace
    separator = b"," if body else b""
    return b"%s%s\"priority\":%d}" % (raw[:end], separator, priority)


async def _read_body(scope: Scope, receive: Any, limit: int) -> bytes:
    too_large = GatewayError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_response(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, exc.detail, headers=dict(exc.headers or {})).response()
