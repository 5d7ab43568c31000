"""Slow clients (slowloris): raw sockets that stop halfway through a request are answered 408 and
closed within the configured timeouts, while normal requests are served; the connection limit;
uvicorn's own 400s in the OpenAI error shape. Every wait is bounded; loopback only."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
#: Far above the timeouts under test: only a connection that is never closed reaches it.
HANG_GUARD_S = 20.0


def _config(stub_url: str, **limits: float) -> GatewayConfig:
    return GatewayConfig(backends=(stub_url,), **limits)  # type: ignore[arg-type]


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def _sockets(url: str, count: int) -> AsyncIterator[list[Connection]]:
    """`count` raw connections, closed on the way out whatever happens (else the server's shutdown
    waits for them: a regression must fail, not hang)."""
    parts = urlsplit(url)
    opened = [await asyncio.open_connection(parts.hostname, parts.port) for _ in range(count)]
    try:
        yield opened
    finally:
        for _, writer in opened:
            writer.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """What the server sends until it closes the connection: status, headers, body."""
    raw = await asyncio.wait_for(reader.read(), HANG_GUARD_S)  # to EOF: the server closed it
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    return int(status_line.split()[1]), headers, body


def _half_a_body(path: str = "/v1/chat/completions") -> bytes:
    body = json.dumps(CHAT).encode()
    return (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2]


async def test_slowloris_half_a_body_gets_408_and_is_closed_within_the_body_timeout() -> None:
    """1,500 connections that sent part of a body and stopped were all still open after 100 s."""
    async with running_stub() as (stub, stub_url):
        config = _config(stub_url, body_timeout_s=0.5)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: 2)) as (_, url), \
                httpx.AsyncClient() as client:
            async with _sockets(url, 1) as [(reader, writer)]:
                writer.write(_half_a_body())
                await asyncio.sleep(0.1)
                assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200  # others served
                status, headers, body = await _answer(reader)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"] == {"message": "the request body did not arrive in time",
                                         "type": "invalid_request_error", "param": None, "code": "request_timeout"}
    assert len(stub.received) == 1  # only the normal request reached the engine


async def test_slowloris_partial_headers_get_408_and_a_silent_connection_is_closed() -> None:
    async with running_stub() as (stub, stub_url):
        async with running_gateway(_config(stub_url, header_timeout_s=0.5), predictor=FunctionPredictor(lambda r: 2)) \
                as (_, url):
            async with _sockets(url, 2) as [(partial, partial_writer), (silent, _)]:
                partial_writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
                status, headers, body = await _answer(partial)
                assert await asyncio.wait_for(silent.read(), HANG_GUARD_S) == b""  # closed without a word
    assert status == 408 and json.loads(body)["error"]["code"] == "request_timeout"
    assert stub.received == []


async def test_slowloris_many_stalled_connections_are_all_closed_while_requests_are_served() -> None:
    async with running_stub() as (stub, stub_url):
        # Not shorter: the normal requests' clients share this busy event loop and must not be cut.
        config = _config(stub_url, header_timeout_s=2.0, body_timeout_s=2.0)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: 2)) as (_, url), \
                httpx.AsyncClient() as client:
            async with _sockets(url, 60) as stalled:
                for i, (_, writer) in enumerate(stalled):
                    writer.write(_half_a_body() if i % 2 else b"POST /v1/completions HTTP/1.1\r\nhost")
                served = await asyncio.gather(*(client.post(url + "/v1/chat/completions", json=CHAT)
                                                for _ in range(10)))
                answers = await asyncio.gather(*(_answer(reader) for reader, _ in stalled))
    assert [r.status_code for r in served] == [200] * 10
    assert [status for status, _, _ in answers] == [408] * 60
    assert len(stub.received) == 10


async def test_slowloris_a_response_before_the_body_ended_closes_the_connection() -> None:
    """An endpoint that answers without reading the body (or a 413) must not leave the connection
    trickling: the rest of the body has the header timeout to arrive."""
    async with running_stub() as (_, stub_url):
        async with running_gateway(_config(stub_url, header_timeout_s=0.5, body_timeout_s=HANG_GUARD_S * 2),
                                   predictor=FunctionPredictor(lambda r: 2)) as (_, url):
            async with _sockets(url, 1) as [(reader, writer)]:
                writer.write(b"GET /health HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
                status, headers, _ = await _answer(reader)
    assert status == 200


async def test_uvicorns_own_400_is_an_openai_error() -> None:
    async with running_stub() as (_, stub_url):
        async with running_gateway(_config(stub_url), predictor=FunctionPredictor(lambda r: 2)) as (_, url):
            async with _sockets(url, 1) as [(reader, writer)]:
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                status, headers, body = await _answer(reader)
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http"


async def test_connections_beyond_the_limit_get_503_until_others_close() -> None:
    async with running_stub() as (_, stub_url):
        async with running_gateway(_config(stub_url, max_connections=4), predictor=FunctionPredictor(lambda r: 2)) \
                as (_, url):
            async with _sockets(url, 4), httpx.AsyncClient() as client:
                assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 503
            await asyncio.sleep(0.1)  # the server sees them closed
            async with httpx.AsyncClient() as client:
                assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200
