"""On the real engine: concurrent streaming clients through the gateway each get exactly one complete answer."""

import asyncio
import collections
import json

import httpx
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway

pytestmark = pytest.mark.integration

CLIENTS = 8


async def test_concurrent_streams_through_the_gateway_complete_exactly_once(engine) -> None:
    # Held in the gateway's queue (the engine's slot count) and sent at priority 0, vLLM's
    # default: on an engine shared with other work these must not starve behind its queue.
    config = GatewayConfig(backends=(engine.url,), mode="both", max_inflight=engine.max_num_seqs)
    predictor = FunctionPredictor(lambda r: 0)
    async with running_gateway(config, predictor=predictor) as (gateway, url), \
            httpx.AsyncClient(timeout=600) as client:

        async def one(i: int) -> tuple[str, list[dict]]:
            body = {"model": engine.model, "max_tokens": 4, "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": f"Client {i}: name a colour."}]}
            async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                data = [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]
            assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
            return r.headers["x-lengthwise-request-id"], [json.loads(d) for d in data[:-1]]

        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(CLIENTS))), 600)
        assert len({rid for rid, _ in results}) == CLIENTS
        engine_ids = collections.Counter()
        for _, events in results:
            assert all("error" not in e for e in events)
            ids = {e["id"] for e in events}
            assert len(ids) == 1  # one engine request per stream
            engine_ids.update(ids)
            usage = events[-1]["usage"]
            assert 1 <= usage["completion_tokens"] <= 4
        assert len(engine_ids) == CLIENTS
        backend = gateway.pool.backends[0]
        assert backend.inflight == 0 and backend.assigned == 0 and gateway.scheduler.waiting() == 0
