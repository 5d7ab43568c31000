"""What a request holds is given back however it ends, unexpected errors included; the gateway
closes its predictor when it shuts down."""

from __future__ import annotations

import asyncio
from unittest.mock import AsyncMock

import httpx
import pytest

from lengthwise.gateway import completions
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.proxy import StreamTap
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "stream": True}


def _bug(*args: object, **kwargs: object) -> None:
    raise RuntimeError("a bug")


@pytest.mark.parametrize("where", ["opening the upstream request", "relaying the stream"])
async def test_an_unexpected_error_mid_request_gives_back_slot_inflight_and_work(
        where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_stub() as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=1, health_interval_s=3600)
        oracle = FunctionPredictor(lambda r: r.max_tokens or 16)
        async with running_gateway(config, predictor=oracle) as (gateway, url), httpx.AsyncClient() as client:
            chat = url + "/v1/chat/completions"
            with monkeypatch.context() as patch:
                if where == "opening the upstream request":
                    patch.setattr(completions, "open_upstream", AsyncMock(side_effect=RuntimeError("a bug")))
                else:
                    patch.setattr(StreamTap, "feed", _bug)
                failed = await client.post(chat, json=CHAT)
            assert "internal_error" in failed.text
            assert failed.status_code == (500 if where == "opening the upstream request" else 200)  # else: streaming
            backend = gateway.pool.backends[0]
            assert (backend.waiting, backend.inflight, backend.assigned, backend.outstanding_tokens) == (0, 0, 0, 0.0)
            assert gateway.scheduler is not None and gateway.scheduler.running(backend) == 0
            metrics = (await client.get(url + "/metrics")).text
            assert f'lengthwise:num_requests_running{{backend="{backend.url}"}} 0.0' in metrics
            async with asyncio.timeout(10):  # the one slot is free again
                assert (await client.post(chat, json=CHAT)).status_code == 200


async def test_the_gateway_closes_its_predictor_once_on_shutdown() -> None:
    predictor = FunctionPredictor(lambda r: 1.0)
    predictor.aclose = AsyncMock()  # type: ignore[method-assign]
    async with running_stub() as (_, stub_url):
        async with running_gateway(GatewayConfig(backends=(stub_url,)), predictor=predictor):
            predictor.aclose.assert_not_awaited()
    predictor.aclose.assert_awaited_once()
