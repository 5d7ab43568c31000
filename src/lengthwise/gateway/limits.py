"""Limits on clients that are slow on purpose (slowloris) or by accident, and how many there are.

uvicorn has no timeout on receiving a request: its keep-alive timer runs only between
requests and restarts on every byte, so 1,500 connections that sent part of a request
and stopped stayed open for good. Two guards, one per phase:

- headers: `GuardedHttpToolsProtocol`, uvicorn's httptools protocol with a deadline; a
  connection must begin a request within `header_timeout_s` and finish its headers
  `header_timeout_s` after beginning it, else it gets 408 (silence: just closed); the rest
  of a body the app answered early (413) must arrive as fast. Its own 400s ("Invalid HTTP
  request") come in the OpenAI error shape too;
- body: `BodyDeadline`, ASGI middleware; the whole body must arrive `body_timeout_s` after
  the headers, else the app sees the client leave and the client gets 408 and the
  connection is closed.

The number of connections is uvicorn's `limit_concurrency` (beyond it: uvicorn's own
503, text/plain). `guard` puts these together from the gateway's configuration.
"""

from __future__ import annotations

import asyncio
import functools
import json
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.errors import GatewayError

Scope = dict[str, Any]


def guard(app: Any, config: GatewayConfig) -> tuple[Any, dict[str, Any]]:
    """`app` behind the body deadline, and the uvicorn options for the other client limits."""
    options = {
        "http": functools.partial(GuardedHttpToolsProtocol, header_timeout_s=config.header_timeout_s),
        "limit_concurrency": config.max_connections,
        "timeout_graceful_shutdown": config.graceful_shutdown_s,
    }
    return BodyDeadline(app, config.body_timeout_s), options


def _timed_out(what: str) -> GatewayError:
    return GatewayError(408, f"the request {what} did not arrive in time", code="request_timeout")


def _raw_response(error: GatewayError, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for errors before any ASGI app runs."""
    body = json.dumps(error.payload()).encode()
    head = [f"HTTP/1.1 {error.status} {_REASONS[error.status]}".encode()]
    head += [name + b": " + value for name, value in default_headers]
    head += [b"content-type: application/json", b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


_REASONS = {400: "Bad Request", 408: "Request Timeout"}


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on request headers, and 400s as OpenAI errors."""

    def __init__(self, *args: Any, header_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._request_begun = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()  # the rest of a body answered early (below) has arrived
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            # Answered before its body ended (a 413, an endpoint that does not read it): the rest
            # must still arrive in time, or the connection is closed (uvicorn's keep-alive timer
            # restarts on every byte).
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        error = GatewayError(400, msg, code="invalid_http")
        self.transport.write(_raw_response(error, self.server_state.default_headers))
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined request's headers stalled behind a response under way: not yet
            return
        if self._request_begun:
            self.transport.write(_raw_response(_timed_out("headers"), self.server_state.default_headers))
        self.transport.close()


class BodyDeadline:
    """ASGI middleware: a request body not complete `timeout_s` after the headers ends in 408."""

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _GuardedRequest(receive, send, asyncio.get_running_loop().time() + self.timeout_s)
        try:
            await self.app(scope, request.receive, request.send)
        finally:
            if request.expired and not request.response_started:
                body = json.dumps(_timed_out("body").payload()).encode()
                await send({"type": "http.response.start", "status": 408, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                    (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})


@dataclass
class _GuardedRequest:
    """One request's receive and send, with the body's deadline."""

    _receive: Any
    _send: Any
    deadline: float
    body_complete: bool = False
    expired: bool = False
    response_started: bool = False

    async def receive(self) -> dict[str, Any]:
        if self.body_complete:
            return await self._receive()
        if self.expired:
            return {"type": "http.disconnect"}
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            self.expired = True  # to the app, the client left; the client gets 408 once the app returns
            return {"type": "http.disconnect"}
        if message["type"] != "http.request" or not message.get("more_body"):
            self.body_complete = True
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)
