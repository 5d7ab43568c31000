"""Scheduling through the gateway: admission order, per-backend limits, priorities, prediction routing."""

import asyncio
from collections.abc import Callable

import httpx
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.priority import BOUND
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub


def _chat(max_tokens: int, text: str = "hello", **extra: object) -> dict:
    return {"model": "stub-model", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


async def _send_staggered(client: httpx.AsyncClient, url: str, bodies: list[dict],
                          arrived: Callable[[], int] | None = None) -> list[httpx.Response]:
    """Send in this order and wait for all: each once the gateway has taken in the one before
    (`arrived()` counts them), else 30 ms apart. Waiting for the gateway keeps the order on a loaded machine."""
    tasks = []
    for sent, body in enumerate(bodies, start=1):
        tasks.append(asyncio.create_task(client.post(url + "/v1/chat/completions", json=body)))
        deadline = asyncio.get_running_loop().time() + 5.0
        while arrived is not None and arrived() < sent and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.03)
    return await asyncio.gather(*tasks)


@pytest.mark.parametrize("policy, expected", [("sjf", [1, 4, 16, 64]), ("fcfs", [1, 64, 16, 4]),
                                              ("sjf+aging:max_wait=0", [1, 64, 16, 4])])
async def test_queue_mode_admits_in_policy_order(policy: str, expected: list[int]) -> None:
    async with running_stub(latency_s=0.5) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", policy=policy, max_inflight=1)
        predictor = FunctionPredictor(lambda r: r.max_tokens)
        async with running_gateway(config, predictor=predictor) as (gateway, url), httpx.AsyncClient() as client:
            scheduler = gateway.scheduler
            assert scheduler is not None
            backend = gateway.pool.backends[0]
            responses = await _send_staggered(client, url, [_chat(n) for n in (1, 64, 16, 4)],
                                              lambda: scheduler.waiting() + scheduler.running(backend))
            assert all(r.status_code == 200 for r in responses)
            assert [r.body["max_tokens"] for r in stub.received] == expected
            assert stub.max_inflight_seen == 1
            waited = {int(float(r.headers["x-lengthwise-predicted-tokens"])): float(r.headers["x-lengthwise-queue-ms"])
                      for r in responses}
            assert waited[expected[-1]] > waited[expected[1]] > 100  # waited behind the others
            assert "priority" not in stub.received[0].body  # queue mode sends no priority


@pytest.mark.parametrize("engine, low_first, sign", [("vllm", False, 1), ("sglang", False, -1), ("sglang", True, 1)])
async def test_priority_mode_sends_the_engines_priority(engine: str, low_first: bool, sign: int) -> None:
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), engine=engine, sglang_low_first=low_first, policy="sjf")
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: r.max_tokens)) as (_, url), \
                httpx.AsyncClient() as client:
            for n in (4, 64):
                r = await client.post(url + "/v1/chat/completions", json=_chat(n, priority=123))
                assert r.headers["x-lengthwise-priority"] == str(sign * n)
            assert [x.body["priority"] for x in stub.received] == [sign * 4, sign * 64]  # the client's is replaced


async def test_predictions_skip_the_queue_and_name_the_real_requests_backend() -> None:
    """Prediction queries skip the queue and go where their request goes: checked with a predictor
    that queries the stub itself, as the self-predictor does."""
    async with running_stub(latency_s=0.2) as (a, a_url), running_stub(latency_s=0.2) as (b, b_url):
        seen: list[str | None] = []

        def remember(request: object) -> float:
            seen.append(request.backend)  # type: ignore[attr-defined]
            return 8.0

        config = GatewayConfig(backends=(a_url, b_url), mode="both", max_inflight=1)
        async with running_gateway(config, predictor=FunctionPredictor(remember)) as (gateway, url), \
                httpx.AsyncClient() as client:
            assert gateway.engine_priority is not None and gateway.engine_priority.urgent == -BOUND
            responses = await _send_staggered(client, url, [_chat(4, f"prompt {i}") for i in range(6)])
            urls = [a_url, b_url]
            assert [urls[int(r.headers["x-lengthwise-backend"])] for r in responses] == seen
            assert a.max_inflight_seen == 1 and b.max_inflight_seen == 1
            assert len(a.received) + len(b.received) == 6 and a.received and b.received  # both used
            waits = [float(r.headers["x-lengthwise-queue-ms"]) for r in responses]
            predicting = [float(r.headers["x-lengthwise-prediction-ms"]) for r in responses]
            assert max(waits) > 100 and max(predicting) < 100  # predictions did not wait in the queue
