"""Pass-through: what the client gets is what the backend sent, plus x-lengthwise-* headers."""

import asyncio
import re
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def _normalize(data: bytes) -> bytes:
    """Ids and timestamps differ between two answers; everything else must not."""
    return re.sub(rb'"created":\d+', b'"created":0', re.sub(rb"stub\d+", b"stubN", data))


@pytest.fixture
async def env() -> AsyncIterator[tuple]:
    async with running_stub() as (stub, stub_url):
        predictor = FunctionPredictor(lambda r: r.max_tokens or 16)
        config = GatewayConfig(backends=(stub_url,), mode="both", max_inflight=2, policy="sjf",  # priority = prediction
                               lazy_prediction=False)
        async with running_gateway(config, predictor=predictor) as (gateway, url), httpx.AsyncClient() as client:
            yield stub, stub_url, gateway, url, predictor, client


@pytest.mark.parametrize("path, body", [("/v1/chat/completions", CHAT),
                                        ("/v1/completions", {"model": "stub-model", "prompt": "hi", "max_tokens": 3})])
async def test_plain_answers_are_the_backends_bytes(env: tuple, path: str, body: dict) -> None:
    stub, stub_url, gateway, url, predictor, client = env
    direct = await client.post(stub_url + path, json=body)
    proxied = await client.post(url + path, json=body)
    assert proxied.status_code == 200
    assert _normalize(proxied.content) == _normalize(direct.content)
    assert proxied.headers["x-lengthwise-predicted-tokens"] == f"{body['max_tokens']:.1f}"
    assert proxied.headers["x-lengthwise-predictor"] == "function"
    assert float(proxied.headers["x-lengthwise-queue-ms"]) >= 0
    assert proxied.headers["x-lengthwise-priority"] == str(body["max_tokens"])
    sent = stub.received[-1].body
    assert sent == {**body, "priority": body["max_tokens"]}  # every field untouched, plus the priority
    await gateway.completions.predicting.settle()  # the predictor learns in the background
    assert predictor.observed[-1][1:] == (body["max_tokens"], body["max_tokens"])


@pytest.mark.parametrize("client_asks_usage", [False, True])
async def test_streams_are_the_backends_bytes_and_still_teach_the_predictor(env: tuple, client_asks_usage: bool) -> None:
    stub, stub_url, gateway, url, predictor, client = env
    body = {**CHAT, "stream": True}
    if client_asks_usage:
        body["stream_options"] = {"include_usage": True}
    direct = await client.post(stub_url + "/v1/chat/completions", json=body)
    proxied = await client.post(url + "/v1/chat/completions", json=body)
    assert proxied.headers["content-type"].startswith("text/event-stream")
    assert _normalize(proxied.content) == _normalize(direct.content)
    assert (b'"usage"' in proxied.content) == client_asks_usage
    assert stub.received[-1].body == {**body, "priority": 5}  # nothing asked on the client's behalf
    await gateway.completions.predicting.settle()
    assert predictor.observed[-1][2] == 5  # from the usage, or counted


async def test_the_openai_client_streams_through_unchanged(env: tuple) -> None:
    stub, stub_url, gateway, url, predictor, client = env
    results = []
    for base in (stub_url, url):
        oai = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused")
        stream = await oai.chat.completions.create(model="stub-model", messages=CHAT["messages"], max_tokens=4,
                                                    stream=True)
        results.append([(c.choices[0].delta.content, c.choices[0].finish_reason) async for c in stream])
        await oai.close()
    assert results[0] == results[1] and len(results[1]) == 5


async def test_models_health_and_metrics(env: tuple) -> None:
    stub, stub_url, gateway, url, predictor, client = env
    models = await client.get(url + "/v1/models")
    assert [m["id"] for m in models.json()["data"]] == ["stub-model"]
    assert (await client.get(url + "/health")).json()["healthy_backends"] == 1
    await client.post(url + "/v1/chat/completions", json=CHAT)
    text = (await client.get(url + "/metrics")).text
    for name in ("lengthwise_requests_total", "lengthwise:request_queue_time_seconds_count",
                 "lengthwise:e2e_request_latency_seconds_count", "lengthwise_predictions_total",
                 "lengthwise_prediction_abs_error_tokens_count", "lengthwise:num_requests_waiting",
                 "lengthwise:num_requests_running", "lengthwise_backend_outstanding_tokens",
                 "lengthwise:prompt_tokens_total", "lengthwise_backend_healthy"):
        assert name in text, name
    assert 'lengthwise_requests_total{endpoint="chat",status="200"} 1.0' in text
    assert f'lengthwise_backend_outstanding_tokens{{backend="{stub_url}"}} 0.0' in text


async def test_cached_prompt_share_is_recorded_by_wait(env: tuple) -> None:
    stub, stub_url, gateway, url, predictor, client = env
    long_prompt = {**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}
    for _ in range(2):
        await client.post(url + "/v1/chat/completions", json=long_prompt)
    text = (await client.get(url + "/metrics")).text
    cached = re.search(r'lengthwise:prompt_tokens_cached_total\{wait="<0.1s"\} (\S+)', text)
    prompt = re.search(r'lengthwise:prompt_tokens_total\{wait="<0.1s"\} (\S+)', text)
    assert cached and prompt and 0 < float(cached[1]) < float(prompt[1])


async def test_authorization_is_forwarded_and_client_keys_are_checked() -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), api_keys=("k1", "k2"))
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: 1)) as (_, url), \
                httpx.AsyncClient() as client:
            for headers, status in (({}, 401), ({"authorization": "Bearer nope"}, 401),
                                    ({"authorization": "Bearer k2"}, 200)):
                r = await client.post(url + "/v1/chat/completions", json=CHAT, headers=headers)
                assert r.status_code == status
            assert r.status_code == 200
            assert stub.received[-1].headers["authorization"] == "Bearer k2"
            assert (await client.get(url + "/v1/models")).status_code == 401
        config = GatewayConfig(backends=(stub_url,), backend_api_key="backend-secret")
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: 1)) as (_, url), \
                httpx.AsyncClient() as client:
            await client.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer mine"})
            assert stub.received[-1].headers["authorization"] == "Bearer backend-secret"


async def test_a_client_hanging_up_at_done_still_teaches_the_predictor(env: tuple) -> None:
    """Load generators stop reading at `data: [DONE]` and close; the answer was complete."""
    stub, stub_url, gateway, url, predictor, client = env
    stub.done_linger_s = 0.2  # the backend ends its body a little after [DONE], as vLLM may
    for i in range(20):
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 3 + i % 4}
        async with client.stream("POST", url + "/v1/chat/completions", json=body) as resp:
            async for line in resp.aiter_lines():
                if line.strip() == "data: [DONE]":
                    break  # leave without reading the end of the chunked body
    for _ in range(50):
        if len(predictor.observed) == 20:
            break
        await asyncio.sleep(0.02)
    assert [o[2] for o in predictor.observed] == [3 + i % 4 for i in range(20)]
    await asyncio.sleep(0.3)  # the last response's body ends after the linger
    metrics = (await client.get(url + "/metrics")).text
    assert 'lengthwise_requests_total{endpoint="chat",status="200"} 20.0' in metrics  # none counted as 499
