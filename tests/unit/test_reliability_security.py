"""Security: API keys compared in constant time, body and header limits, loopback by default,
no prompt in the logs, no secret or backend address in any error the gateway sends."""

import asyncio
import inspect
import logging

import httpx
import pytest

from lengthwise.gateway import cli
from lengthwise.gateway.auth import ApiKeys
from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CLIENT_KEY = "sk-client-Zq8vSECRET"
BACKEND_KEY = "sk-backend-Wm3pSECRET"
PROMPT = "my-private-prompt-Xy7 tell me the launch codes"
CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 3}
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def _oracle() -> FunctionPredictor:
    return FunctionPredictor(lambda r: r.max_tokens or 16)


def test_keys_are_compared_in_constant_time() -> None:
    source = inspect.getsource(ApiKeys.check)
    assert "hmac.compare_digest(" in source
    assert "token ==" not in source and "== key" not in source and "token in self._api_keys" not in source


def test_loopback_is_the_default_bind() -> None:
    assert GatewayConfig(backends=("http://127.0.0.1:1",)).host == "127.0.0.1"
    assert inspect.signature(cli.serve).parameters["host"].default == "127.0.0.1"


async def test_api_keys_guard_the_api_but_not_health_and_metrics() -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), api_keys=("sk-other-key", CLIENT_KEY))
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {CLIENT_KEY}x"},
                            {"authorization": f"Bearer {CLIENT_KEY[:-1]}"}, {"authorization": CLIENT_KEY},
                            {"authorization": "Bearer"}, {"x-api-key": CLIENT_KEY}):
                r = await client.post(chat, json=CHAT, headers=headers)
                assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", headers
                assert r.headers["www-authenticate"] == "Bearer"
                assert (await client.get(url + "/v1/models", headers=headers)).status_code == 401
            assert (await client.post(chat, json=CHAT, headers=AUTH)).status_code == 200
            assert (await client.post(chat, json=CHAT, headers={"authorization": "bearer sk-other-key"})).status_code \
                == 200  # the second key, and the scheme in any case
            assert (await client.get(url + "/v1/models", headers=AUTH)).status_code == 200
            assert (await client.get(url + "/health")).status_code == 200
            assert (await client.get(url + "/metrics")).status_code == 200
            assert len(stub.received) == 2  # no unauthorized request reached the engine


async def test_body_and_header_limits() -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), max_body_bytes=10_000, max_header_bytes=8_000)
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"

            async def chunks():  # no content-length: the limit must hold while reading
                for _ in range(100):
                    yield b"x" * 1_000

            r = await client.post(chat, content=chunks())
            assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
            r = await client.post(chat, json=CHAT, headers={"x-big": "a" * 9_000})
            assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
            many = {f"x-h{i}": "v" for i in range(2_000)}  # small each, too many in all
            assert (await client.post(chat, json=CHAT, headers=many)).status_code == 431
            assert stub.received == []
            assert (await client.post(chat, json=CHAT, headers={"x-fine": "a" * 1_000})).status_code == 200


async def test_no_secret_or_backend_address_in_any_error() -> None:
    async with running_stub(latency_s=0.3) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), api_keys=(CLIENT_KEY,), backend_api_key=BACKEND_KEY,
                               mode="queue", max_inflight=1, max_queue=1, max_body_bytes=10_000, read_timeout_s=0.5)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"
            answers = [
                await client.post(chat, json=CHAT, headers={"authorization": f"Bearer {CLIENT_KEY}-wrong"}),  # 401
                await client.post(chat, content=b"{", headers=AUTH),  # 400
                await client.post(chat, json={**CHAT, "model": "nope"}, headers=AUTH),  # 404
                await client.post(chat, json={**CHAT, "pad": "x" * 20_000}, headers=AUTH),  # 413
            ]
            busy = [asyncio.create_task(client.post(chat, json=CHAT, headers=AUTH)) for _ in range(2)]
            await asyncio.sleep(0.15)
            answers.append(await client.post(chat, json=CHAT, headers=AUTH))  # 429
            await asyncio.gather(*busy)
            for fault in ("garbage", "hang", "cut"):  # 502, 504, a stream's error event
                stub.fault = fault
                answers.append(await client.post(chat, json={**CHAT, "stream": fault == "cut"}, headers=AUTH))
            assert [a.status_code for a in answers] == [401, 400, 404, 413, 429, 502, 504, 200]
            for a in answers:
                seen = a.text + str(a.headers)
                for secret in (CLIENT_KEY, BACKEND_KEY, stub_url, stub_url.rsplit(":", 1)[1]):
                    assert secret not in seen, (a.status_code, secret)
            assert '"error"' in answers[-1].text  # the cut stream did end with an error event
            assert {r.headers["authorization"] for r in stub.received} == {f"Bearer {BACKEND_KEY}"}


async def test_prompts_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the most the gateway ever logs
    broken = FunctionPredictor(lambda r: 1 / 0, name="broken")  # the predictor's failure is logged
    async with running_stub(token_interval_s=0.01) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), read_timeout_s=0.3)
        async with running_gateway(config, predictor=broken) as (gateway, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"
            for fault in (None, "error", "garbage", "hang", "cut"):
                stub.fault = fault
                for stream in (False, True):
                    await client.post(chat, json={**CHAT, "stream": stream})
            await client.post(chat, content=('{"messages": "' + PROMPT).encode())  # 400
            await client.post(url + "/v1/completions", json={"model": "nope", "prompt": PROMPT})  # 404
    assert any(r.name.startswith("lengthwise") for r in caplog.records)  # the gateway did log
    logged = caplog.text + "".join(str(r.args) + str(r.exc_info) for r in caplog.records)
    assert "my-private-prompt" not in logged and "launch codes" not in logged
