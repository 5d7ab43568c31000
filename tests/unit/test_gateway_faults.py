"""Bad input and faults: OpenAI-format errors, retries on another backend, fallbacks, disconnects."""

import asyncio
import socket

import httpx
import openai
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3}


def _dead_url() -> str:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _oracle() -> FunctionPredictor:
    return FunctionPredictor(lambda r: r.max_tokens or 16)


def _assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error["message"], str) and error["type"]
    return error


async def test_bad_input_gets_openai_errors() -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), max_body_bytes=10_000)
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"
            assert _assert_openai_error(await client.post(chat, content=b"{oops"), 400)["type"] == \
                "invalid_request_error"
            assert _assert_openai_error(await client.post(chat, json={**CHAT, "max_tokens": "x"}), 400)["param"] == \
                "max_tokens"
            assert _assert_openai_error(await client.post(chat, json={**CHAT, "model": "nope"}), 404)["code"] == \
                "model_not_found"
            big = {**CHAT, "messages": [{"role": "user", "content": "x" * 20_000}]}
            _assert_openai_error(await client.post(chat, json=big), 413)
            _assert_openai_error(await client.get(chat), 405)
            _assert_openai_error(await client.post(url + "/v1/nothing", json=CHAT), 404)
            assert stub.received == []  # none of it reached the backend


async def test_a_dead_backend_is_skipped_and_leaves_the_pool() -> None:
    async with running_stub() as (stub, stub_url):
        dead = _dead_url()
        config = GatewayConfig(backends=(dead, stub_url), health_interval_s=3600)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            dead_backend = gateway.pool.backends[0]
            assert not dead_backend.healthy  # the start-up health check found it
            dead_backend.healthy = True  # as if it died after the check: the request must still be served
            live = gateway.pool.backends[1]
            gateway.pool.assign(live, 1e9)  # so that the router picks the dead one first
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            assert r.status_code == 200 and r.headers["x-lengthwise-backend"] == "1"
            assert not dead_backend.healthy
            assert dead_backend.inflight == 0 and dead_backend.assigned == 0
            assert 'lengthwise_upstream_retries_total 1.0' in (await client.get(url + "/metrics")).text


async def test_no_backend_left_is_503_with_a_clear_message() -> None:
    async with running_gateway(GatewayConfig(backends=(_dead_url(),)), predictor=_oracle()) as (_, url), \
            httpx.AsyncClient() as client:
        r = await client.post(url + "/v1/chat/completions", json=CHAT)
        error = _assert_openai_error(r, 503)
        assert "could not be reached" in error["message"] and "127.0.0.1" not in error["message"]
        assert (await client.get(url + "/health")).status_code == 503


async def test_backend_errors_pass_through_and_garbage_is_502() -> None:
    async with running_stub(fault="error") as (stub, stub_url):
        async with running_gateway(GatewayConfig(backends=(stub_url,)), predictor=_oracle()) as (_, url), \
                httpx.AsyncClient() as client:
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            assert r.status_code == 500 and r.json()["error"]["message"] == "stub failure"
            stub.fault = "garbage"
            for stream in (False, True):
                r = await client.post(url + "/v1/chat/completions", json={**CHAT, "stream": stream})
                _assert_openai_error(r, 502)


async def test_a_stream_cut_by_the_backend_ends_with_an_error_event() -> None:
    async with running_stub(fault="cut") as (stub, stub_url):
        async with running_gateway(GatewayConfig(backends=(stub_url,)), predictor=_oracle()) as (gateway, url):
            oai = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
            stream = await oai.chat.completions.create(model="stub-model", messages=CHAT["messages"],
                                                        max_tokens=8, stream=True)
            with pytest.raises(openai.APIError, match="ended the stream early"):
                async for _ in stream:
                    pass
            await oai.close()
            assert gateway.pool.backends[0].inflight == 0


async def test_a_hung_backend_times_out_with_504() -> None:
    async with running_stub(fault="hang") as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), read_timeout_s=0.3)
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            assert "did not answer in time" in _assert_openai_error(r, 504)["message"]
            await asyncio.sleep(0.1)
            assert stub.inflight == 0  # the gateway hung up on it


@pytest.mark.parametrize("predictor, outcome", [
    (FunctionPredictor(lambda r: 1 / 0, name="broken"), "fallback"),
    (FunctionPredictor(lambda r: 5, name="slow", delay_s=5.0), "timeout"),
    (FunctionPredictor(lambda r: float("nan"), name="nan"), "fallback"),
])
async def test_a_failing_predictor_falls_back_and_the_request_goes_on(predictor: FunctionPredictor,
                                                                      outcome: str) -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), prediction_timeout_s=0.2, fallback_tokens=77)
        async with running_gateway(config, predictor=predictor) as (_, url), httpx.AsyncClient() as client:
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            assert r.status_code == 200
            assert r.headers["x-lengthwise-predictor"] == f"{predictor.name};fallback"
            assert r.headers["x-lengthwise-predicted-tokens"] == "77.0"
            metrics = (await client.get(url + "/metrics")).text
            assert f'lengthwise_predictions_total{{outcome="{outcome}",predictor="{predictor.name}"}} 1.0' in metrics


async def test_queue_full_is_429_with_retry_after() -> None:
    async with running_stub(latency_s=0.5) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=1, max_queue=1, retry_after_s=2)
        async with running_gateway(config, predictor=_oracle()) as (_, url), httpx.AsyncClient() as client:
            first = [asyncio.create_task(client.post(url + "/v1/chat/completions", json=CHAT)) for _ in range(2)]
            await asyncio.sleep(0.2)  # one running, one waiting
            r = await client.post(url + "/v1/chat/completions", json=CHAT)
            assert _assert_openai_error(r, 429)["code"] == "queue_full"
            assert r.headers["retry-after"] == "2"
            assert [t.status_code for t in await asyncio.gather(*first)] == [200, 200]


async def test_a_client_leaving_the_queue_or_a_stream_frees_everything() -> None:
    async with running_stub(latency_s=0.3, token_interval_s=0.05) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=1)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            backend = gateway.pool.backends[0]
            running = asyncio.create_task(client.post(url + "/v1/chat/completions", json=CHAT))
            await asyncio.sleep(0.1)
            queued = asyncio.create_task(client.post(url + "/v1/chat/completions", json={**CHAT, "max_tokens": 9}))
            await asyncio.sleep(0.1)
            assert gateway.scheduler.waiting() == 1
            queued.cancel()  # the client goes away while queued
            await asyncio.sleep(0.1)
            assert gateway.scheduler.waiting() == 0
            assert (await running).status_code == 200
            assert [r.body["max_tokens"] for r in stub.received] == [3]  # the cancelled one never went upstream
            # now a stream, left after its first tokens: the backend's request is aborted
            async with client.stream("POST", url + "/v1/chat/completions",
                                     json={**CHAT, "max_tokens": 100, "stream": True}) as r:
                async for _ in r.aiter_bytes():
                    break
            for _ in range(50):
                if stub.inflight == 0 and backend.inflight == 0:
                    break
                await asyncio.sleep(0.05)
            assert stub.inflight == 0 and backend.inflight == 0
            assert gateway.scheduler.running(backend) == 0 and backend.assigned == 0
            metrics = (await client.get(url + "/metrics")).text
            assert 'lengthwise_requests_total{endpoint="chat",status="499"} 2.0' in metrics


async def test_health_checks_take_a_backend_out_and_back() -> None:
    async with running_stub() as (a, a_url), running_stub() as (b, b_url):
        config = GatewayConfig(backends=(a_url, b_url), health_interval_s=0.1)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            a.fault = "down"
            await asyncio.sleep(0.3)
            assert [x.healthy for x in gateway.pool.backends] == [False, True]
            for i in range(4):
                body = {**CHAT, "messages": [{"role": "user", "content": f"prompt {i}"}]}
                r = await client.post(url + "/v1/chat/completions", json=body)
                assert r.headers["x-lengthwise-backend"] == "1"
            a.fault = None
            await asyncio.sleep(0.3)
            assert all(x.healthy for x in gateway.pool.backends)


async def test_requests_queued_for_a_backend_that_leaves_move_to_another() -> None:
    async with running_stub(latency_s=0.5) as (a, a_url), running_stub() as (b, b_url):
        config = GatewayConfig(backends=(a_url, b_url), mode="queue", max_inflight=1, health_interval_s=3600)
        async with running_gateway(config, predictor=_oracle()) as (gateway, url), httpx.AsyncClient() as client:
            first, second = gateway.pool.backends
            gateway.pool.assign(second, 1e9)  # everything goes to the first backend...
            tasks = [asyncio.create_task(client.post(url + "/v1/chat/completions", json=CHAT)) for _ in range(3)]
            await asyncio.sleep(0.2)
            assert gateway.scheduler.waiting(first) == 2
            gateway.pool.mark_down(first, "test")  # ... until it leaves the pool
            responses = await asyncio.gather(*tasks)
            assert sorted(r.headers["x-lengthwise-backend"] for r in responses) == ["0", "1", "1"]
            assert all(r.status_code == 200 for r in responses)
            assert len(a.received) == 1 and len(b.received) == 2
