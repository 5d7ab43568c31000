"""Property-based fuzzing of the gateway's API: whatever the body, no 5xx, no crash, OpenAI-style errors.

The gateway runs in-process (httpx's ASGI transport, its lifespan entered by hand) in front of
a fake engine on loopback that answers every completion with the same small answer, so that
any 5xx seen is the gateway's own. The real `self` predictor is used: junk bodies go through
the prediction query path too.
"""

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lengthwise.gateway.app import Gateway
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.server import serving

MODEL = "fake-model"
EXAMPLES = 300


async def _fake_engine(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers "12" to every completion (as JSON, or as SSE when asked to stream) and lists one model."""
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    chat = scope["path"].endswith("/chat/completions")
    choice = {"index": 0, "finish_reason": "stop", **({"message": {"role": "assistant", "content": "12"}}
                                                       if chat else {"text": "12"})}
    answer: dict[str, Any] = {"id": "x", "object": "list", "data": [{"id": MODEL, "object": "model"}]} \
        if scope["path"] == "/v1/models" else \
        {"id": "x", "choices": [choice], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
    body = json.dumps(answer).encode()
    content_type = b"application/json"
    if raw and json.loads(raw).get("stream") is True:
        body, content_type = b"data: " + body + b"\n\ndata: [DONE]\n\n", b"text/event-stream"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def gateway_client() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    """One event loop, fake engine and gateway for all examples (hypothesis runs them one by one)."""
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()

    async def start() -> httpx.AsyncClient:
        engine_url = await stack.enter_async_context(serving(_fake_engine))
        config = GatewayConfig(backends=(engine_url,), predictor="self", max_body_bytes=64 * 1024,
                               prediction_timeout_s=5, health_interval_s=3600)
        gateway = Gateway(config)
        starlette = gateway.app.app
        await stack.enter_async_context(starlette.router.lifespan_context(starlette))
        transport = httpx.ASGITransport(app=gateway.app)
        return await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gw"))

    client = loop.run_until_complete(start())
    yield loop, client
    loop.run_until_complete(stack.aclose())
    loop.close()


def _check(r: httpx.Response) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and "param" in error and "code" in error


def _post(gateway_client: tuple, path: str, **kwargs: Any) -> httpx.Response:
    loop, client = gateway_client
    return loop.run_until_complete(asyncio.wait_for(client.post(path, **kwargs), 20))


PATHS = st.sampled_from(["/v1/chat/completions", "/v1/completions"])
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                           "content": st.text(max_size=40)}), min_size=1, max_size=3)
# Each field the gateway reads: a valid value, junk, or absent.
FIELDS = {
    "model": st.just(MODEL) | st.text(max_size=20) | JUNK,
    "messages": MESSAGES | JUNK,
    "prompt": st.text(max_size=40) | st.lists(st.integers(0, 50_000), min_size=1, max_size=5) | JUNK,
    "max_tokens": st.integers(-5, 64) | st.integers(min_value=-(2**70), max_value=2**70) | JUNK,
    "max_completion_tokens": st.integers(-5, 64) | JUNK,
    "n": st.integers(-2, 3) | JUNK,
    "stream": st.booleans() | JUNK,
    "stream_options": st.just({"include_usage": True}) | JUNK,
    "priority": st.integers(min_value=-(2**40), max_value=2**40) | JUNK,
    "temperature": st.floats(allow_nan=False) | JUNK,
}
VALID = st.fixed_dictionaries({"model": st.just(MODEL), "messages": MESSAGES, "prompt": st.text(min_size=1, max_size=40),
                               "max_tokens": st.integers(0, 64)})
# A valid body with one field the gateway reads spoiled, any mix of valid/junk/absent fields, or pure junk.
BODIES = st.builds(lambda base, spoiled: {**base, **spoiled}, VALID,
                   st.sampled_from(sorted(FIELDS)).flatmap(lambda k: FIELDS[k].map(lambda v: {k: v}))) \
    | st.fixed_dictionaries({}, optional=FIELDS) | st.dictionaries(st.text(max_size=10), JUNK, max_size=5)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, body=BODIES)
def test_slow_fuzzed_json_bodies_never_get_a_5xx(gateway_client: tuple, path: str, body: dict) -> None:
    r = _post(gateway_client, path, content=json.dumps(body).encode())
    event(f"status {r.status_code}")  # --hypothesis-show-statistics: how many got through, how many 4xx
    _check(r)


@settings(max_examples=EXAMPLES // 3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=PATHS, raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode)
       | JUNK.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_raw_bytes_never_get_a_5xx(gateway_client: tuple, path: str, raw: bytes) -> None:
    _check(_post(gateway_client, path, content=raw))


@pytest.mark.parametrize("raw", [
    b"[" * 100_000 + b"]" * 100_000,  # deeper than json's recursion limit, bigger than max_body_bytes
    b"[" * 30_000 + b"]" * 30_000,  # deeper than the recursion limit, within max_body_bytes
    b'{"model": "fake-model", "prompt": "x", "max_tokens": 1e999}',  # inf
    b'{"model": "fake-model", "prompt": "x", "max_tokens": NaN}',
    b'{"model": "fake-model", "prompt": "x", "n": 99999999999999999999999999}',
    '{"model": "fake-model", "prompt": "\u00e9\U0001f600\u202e\x00"}'.encode("utf-16"),  # UTF-16 JSON
    b'{"model": "fake-model", "prompt": "\xff\xfe broken utf-8"}',
    b'{"model": "fake-model", "prompt": "x", "priority": "urgent"}',
])
def test_edge_case_bodies_never_get_a_5xx(gateway_client: tuple, raw: bytes) -> None:
    _check(_post(gateway_client, "/v1/completions", content=raw))
