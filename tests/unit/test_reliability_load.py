"""Load: many concurrent streaming clients, each answered exactly once; a full queue answers 429 at once.

The 1,000-client run with memory figures is `benchmarks/reliability_load.py` (separate
processes); these are its in-process twins, bounded in time, that CI runs with 200 clients.
"""

import asyncio
import collections
import json
import os

import httpx

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

#: 200 in CI; LENGTHWISE_LOAD_CLIENTS=1000 runs the full count in-process (about 35 s here).
CLIENTS = int(os.environ.get("LENGTHWISE_LOAD_CLIENTS", "200"))
TOKENS = 8


def _body(i: int) -> dict:
    return {"model": "stub-model", "stream": True, "max_tokens": TOKENS, "user": f"client-{i}",
            "messages": [{"role": "user", "content": f"client {i}"}]}


async def _stream(client: httpx.AsyncClient, url: str, i: int) -> tuple[int, dict[str, str], str]:
    """Status, headers and the whole body of one streaming request."""
    async with client.stream("POST", url + "/v1/chat/completions", json=_body(i)) as r:
        return r.status_code, dict(r.headers), (await r.aread()).decode()


def _data(body: str) -> list[str]:
    """The SSE data lines of a stream."""
    return [line.removeprefix("data: ") for line in body.split("\n") if line.startswith("data: ")]


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))


async def test_slow_concurrent_streams_each_complete_exactly_once() -> None:
    async with running_stub(token_interval_s=0.01) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=64, max_queue=CLIENTS)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: TOKENS)) as (gateway, url), \
                _client() as client:
            async with asyncio.timeout(90):
                results = await asyncio.gather(*(_stream(client, url, i) for i in range(CLIENTS)))
            stream_ids = set()
            for status, headers, body in results:
                assert status == 200
                data = _data(body)
                assert data[-1] == "[DONE]" and data.count("[DONE]") == 1
                events = [json.loads(d) for d in data[:-1]]
                assert all("error" not in e for e in events)
                ids = {e["id"] for e in events}
                assert len(ids) == 1  # one engine request per stream: nothing mixed in
                stream_ids |= ids
                assert sum(1 for e in events if e["choices"][0]["delta"].get("content")) == TOKENS
            gateway_ids = [h["x-lengthwise-request-id"] for _, h, _ in results]
            assert len(set(gateway_ids)) == CLIENTS and len(stream_ids) == CLIENTS
            # end to end: the engine got each client's request exactly once
            users = collections.Counter(r.body["user"] for r in stub.received)
            assert users == {f"client-{i}": 1 for i in range(CLIENTS)}
            assert stub.max_inflight_seen <= 64
            # everything held is given back
            backend = gateway.pool.backends[0]
            assert gateway.scheduler.waiting() == 0 and gateway.scheduler.running(backend) == 0
            assert backend.inflight == 0 and backend.assigned == 0
            metrics = (await client.get(url + "/metrics")).text
            assert f'lengthwise_requests_total{{endpoint="chat",status="200"}} {CLIENTS}.0' in metrics


async def test_slow_a_burst_over_the_queue_gets_streams_or_429s_never_a_hang() -> None:
    async with running_stub(token_interval_s=0.01) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=4, max_queue=20, retry_after_s=3)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: TOKENS)) as (gateway, url), \
                _client() as client:
            async with asyncio.timeout(60):
                results = await asyncio.gather(*(_stream(client, url, i) for i in range(CLIENTS)))
            statuses = collections.Counter(status for status, _, _ in results)
            assert set(statuses) == {200, 429} and sum(statuses.values()) == CLIENTS
            assert statuses[200] >= 24  # at least the slots and the queue were served
            for status, headers, body in results:
                if status == 429:
                    assert headers["retry-after"] == "3"
                    assert json.loads(body)["error"]["code"] == "queue_full"
                else:
                    assert _data(body)[-1] == "[DONE]"
            served = [r.body["user"] for r in stub.received]
            assert len(served) == len(set(served)) == statuses[200]  # a 429 never reached the engine
            assert gateway.scheduler.waiting() == 0
