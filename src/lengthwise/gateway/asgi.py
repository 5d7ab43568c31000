"""Raw ASGI plumbing for the completion endpoints: routing around Starlette, reading the body,
watching for the client leaving, and sending whole responses and errors."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lengthwise.gateway.errors import GatewayError

#: Header names and values as ASGI carries them.
RawHeaders = list[tuple[bytes, bytes]]


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class CompletionsFirst:
    """POSTs to the completion endpoints go straight to the gateway's handler, the rest through
    Starlette: its router and middleware cost a noticeable share of a proxied request's CPU."""

    PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})

    def __init__(self, completions: ASGIApp, app: ASGIApp) -> None:
        self.completions = completions
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.PATHS:
            await self.app(scope, receive, send)
        elif scope["method"] == "POST":
            await self.completions(scope, receive, send)
        else:
            error = GatewayError(405, "use POST", headers={"allow": "POST"})
            await error.response()(scope, receive, send)


def header_bytes(scope: Scope) -> int:
    """The size of the request's headers, names and values."""
    return sum(len(k) + len(v) for k, v in scope["headers"])


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; a 413 GatewayError past `limit` bytes, ClientGone if the client left."""
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


async def disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_response(send: Send, status: int, headers: RawHeaders, body: bytes) -> None:
    """A whole response: its start with a content-length, then its one body message."""
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: GatewayError, extra_headers: RawHeaders | None = None) -> None:
    """`error` as a whole JSON response, with its own headers and `extra_headers`."""
    headers = [(b"content-type", b"application/json")] + _encode(error.headers) + (extra_headers or [])
    await send_response(send, error.status, headers, json.dumps(error.payload()).encode())


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (404 route, 405 method) in the OpenAI error format."""
    assert isinstance(exc, HTTPException)
    return GatewayError(exc.status_code, exc.detail, headers=dict(exc.headers or {})).response()


def _encode(headers: dict[str, str]) -> RawHeaders:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
