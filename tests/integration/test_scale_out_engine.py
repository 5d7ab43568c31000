"""On the real embedded engine: two gateway replicas sharing a real redis-server share its seats."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway
from lengthwise.testing.redis_server import RedisServer

pytestmark = pytest.mark.integration


async def test_two_replicas_share_the_real_engines_seats(engine) -> None:
    """On the real embedded engine: two replicas sharing Redis never run more requests on it than its
    seats (sampled from vLLM's own gauge), and every request gets one complete answer."""
    clients = 8
    with RedisServer() as redis:
        config = GatewayConfig(backends=(engine.url,), mode="queue", max_inflight=engine.max_num_seqs,
                               redis_url=redis.url, policy="sjf")
        predictor = lambda: FunctionPredictor(lambda r: r.max_tokens or 0)  # noqa: E731
        async with running_gateway(config, predictor=predictor()) as (_, url_a), \
                running_gateway(config, predictor=predictor()) as (_, url_b), \
                httpx.AsyncClient(timeout=600) as client:
            running_seen = 0
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal running_seen
                while not done.is_set():
                    text = (await client.get(engine.url + "/metrics")).text
                    for line in text.splitlines():
                        if line.startswith("vllm:num_requests_running"):
                            running_seen = max(running_seen, int(float(line.rsplit(" ", 1)[1])))
                    await asyncio.sleep(0.2)

            async def one(i: int) -> httpx.Response:
                body = {"model": engine.model, "max_tokens": 4 + i,
                        "messages": [{"role": "user", "content": f"Client {i}: name a colour."}]}
                return await client.post((url_a if i % 2 else url_b) + "/v1/chat/completions", json=body)

            watcher = asyncio.create_task(watch())
            replies = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(clients))), 600)
            done.set()
            await watcher
    assert [r.status_code for r in replies] == [200] * clients
    assert len({r.headers["x-lengthwise-request-id"] for r in replies}) == clients
    assert 1 <= running_seen <= engine.max_num_seqs
