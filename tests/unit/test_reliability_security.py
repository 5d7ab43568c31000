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


async def test_api_keys_guard_the_api_metrics_and_status_but_not_health() -> None:
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
            assert (await client.get(url + "/metrics")).status_code == 401  # it names the backends
            assert (await client.get(url + "/metrics", headers=AUTH)).status_code == 200
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


# ---- second pass (issue 15): what an outside probe broke ----------------------------------------------

PASSWORD = "pa55-Qv9SECRET"


def _with_credentials(url: str) -> str:
    return url.replace("http://", f"http://probe-user:{PASSWORD}@")


@pytest.mark.parametrize("endpoint, body, cap", [
    ("completion", {"max_tokens": 300, "max_completion_tokens": 1}, 300),  # vLLM ignores the second
    ("completion", {"max_completion_tokens": 1}, None),
    ("chat", {"max_tokens": 300, "max_completion_tokens": 7}, 7),
    ("chat", {"max_tokens": 5, "max_completion_tokens": None}, 5),  # vLLM: max_completion_tokens or max_tokens
    ("chat", {"max_tokens": 5, "max_completion_tokens": 0}, 5),
    ("chat", {}, None),
])
def test_queue_jump_via_max_completion_tokens_predictors_see_only_the_enforced_cap(endpoint, body, cap) -> None:
    from lengthwise.gateway.validation import enforced_max_tokens, prediction_body
    from lengthwise.predict.base import LengthRequest

    prompt = {"prompt": PROMPT} if endpoint == "completion" else {"messages": CHAT["messages"]}
    full = {**prompt, **body}
    assert enforced_max_tokens(endpoint, full) == cap
    seen = prediction_body(endpoint, full)
    assert LengthRequest(endpoint, seen).max_tokens == cap
    assert "max_completion_tokens" not in seen and seen.get("max_tokens") == cap
    assert full == {**prompt, **body}  # the client's body is not changed


async def test_queue_jump_via_max_completion_tokens_on_completions_buys_no_priority() -> None:
    """`max_tokens: 300, max_completion_tokens: 1` on /v1/completions got priority 1 (the front of the
    queue) while the engine, which ignores `max_completion_tokens` there, generated 300 tokens."""
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), policy="sjf")  # priority = predicted tokens
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            body = {"model": "stub-model", "prompt": PROMPT, "max_tokens": 300, "max_completion_tokens": 1}
            r = await client.post(url + "/v1/completions", json=body)
            assert r.json()["usage"]["completion_tokens"] == 300  # what the engine enforces
            assert r.headers["x-lengthwise-predicted-tokens"] == "300.0"
            assert r.headers["x-lengthwise-priority"] == "300"


def test_credentials_in_backend_url_are_taken_out_and_redacted() -> None:
    from lengthwise.gateway.credentials import redacted, split_credentials

    url = f"http://probe-user:{PASSWORD}@127.0.0.1:1/"
    assert GatewayConfig(backends=(url,)).backend_urls == ("http://127.0.0.1:1",)
    assert redacted(url) == "http://***@127.0.0.1:1/" and redacted("http://127.0.0.1:1") == "http://127.0.0.1:1"
    bare, header = split_credentials("http://us%40er:p%3Ass@h:1")
    assert bare == "http://h:1" and header == "Basic dXNAZXI6cDpzcw=="  # base64("us@er:p:ss")
    for bad in (f"ftp://u:{PASSWORD}@h", f"http://u:{PASSWORD}@h:1/v1"):
        with pytest.raises(ValueError) as info:
            GatewayConfig(backends=(bad,))
        assert PASSWORD not in str(info.value) and "***" in str(info.value)


async def test_credentials_in_backend_url_become_basic_auth_unless_authorization_is_set() -> None:
    """What the gateway's clients get (app.py passes them on): aiohttp middleware and httpx auth."""
    import aiohttp

    from lengthwise.gateway.backend_auth import BackendCredentials

    basic = "Basic cHJvYmUtdXNlcjpwYTU1LVF2OVNFQ1JFVA=="  # base64("probe-user:" + PASSWORD)
    async with running_stub() as (stub, stub_url):
        credentials = BackendCredentials([_with_credentials(stub_url), "http://127.0.0.1:1"])
        body = {"model": "stub-model", "prompt": "x", "max_tokens": 1}
        async with aiohttp.ClientSession(middlewares=credentials.aiohttp_middlewares()) as session:
            for headers in ({}, {"authorization": "Bearer client"}):
                async with session.post(stub_url + "/v1/completions", json=body, headers=headers) as r:
                    assert r.status == 200
        async with httpx.AsyncClient(auth=credentials.httpx_auth()) as client:
            for headers in ({}, {"authorization": "Bearer client"}):
                assert (await client.post(stub_url + "/v1/completions", json=body, headers=headers)).status_code == 200
        assert [r.headers["authorization"] for r in stub.received] == [basic, "Bearer client"] * 2
    assert not BackendCredentials(["http://127.0.0.1:1"]).aiohttp_middlewares()
    assert BackendCredentials(["http://127.0.0.1:1"]).httpx_auth() is None


async def test_credentials_in_backend_url_no_500_and_no_password_anywhere(caplog: pytest.LogCaptureFixture) -> None:
    """Every request with an Authorization header got 500 (aiohttp refuses URL credentials and the
    header together), and the password was in /metrics labels (no key needed) and the banner."""
    caplog.set_level(logging.INFO)
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(_with_credentials(stub_url),), health_interval_s=0.05)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            r = await client.post(url + "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer client"})
            assert r.status_code == 200, r.text
            assert stub.received[-1].headers["authorization"] == "Bearer client"  # one Authorization: the client's
            stub.fault = "down"  # the health check logs the backend leaving the pool
            while gateway.pool.backends[0].healthy:
                await asyncio.sleep(0.02)
            seen = [(await client.get(url + path)).text for path in ("/metrics", "/lengthwise/status", "/health")]
    seen.append(caplog.text)
    assert "left the pool" in caplog.text and stub_url in seen[0]  # the bare URL labels the metrics
    for text in seen:
        assert PASSWORD not in text and "probe-user" not in text


def test_credentials_in_backend_url_not_in_the_banner(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer
    from typer.testing import CliRunner

    from lengthwise.gateway import server

    monkeypatch.setattr(server, "run", lambda *args, **kwargs: None)
    app = typer.Typer()
    app.command()(cli.serve)
    result = CliRunner().invoke(app, ["--backend", f"http://probe-user:{PASSWORD}@127.0.0.1:1",
                                      "--predictor", "constant:tokens=1"])
    assert result.exit_code == 0, result.output
    assert "http://***@127.0.0.1:1" in result.output and PASSWORD not in result.output


async def test_credentials_in_backend_url_reach_the_backend_as_basic_auth() -> None:
    basic = "Basic cHJvYmUtdXNlcjpwYTU1LVF2OVNFQ1JFVA=="
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(_with_credentials(stub_url),))
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200
            assert stub.received[-1].headers["authorization"] == basic
        config = GatewayConfig(backends=(_with_credentials(stub_url),), backend_api_key=BACKEND_KEY)
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200
            assert stub.received[-1].headers["authorization"] == f"Bearer {BACKEND_KEY}"


async def test_metrics_and_status_need_the_key_when_keys_are_configured() -> None:
    """They name the backends and the predictor's state file: with keys configured, only for key holders
    (a Prometheus scrape job sends it with `authorization: {credentials: KEY}`). /health stays open."""
    async with running_stub() as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), api_keys=(CLIENT_KEY,))
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            for path in ("/metrics", "/lengthwise/status"):
                r = await client.get(url + path)
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
                assert stub_url not in r.text
                assert (await client.get(url + path, headers=AUTH)).status_code == 200
            assert (await client.get(url + "/health")).status_code == 200
