"""The gateway teaches its policy's service-time estimate from the engine's own TTFT and E2E."""

from __future__ import annotations

import httpx
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub


def _stream(max_tokens: int) -> dict:
    return {"model": "stub-model", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("mode, learns", [("queue", True), ("priority", False)])
async def test_streamed_answers_teach_the_service_time_only_where_the_gateway_admits(mode: str, learns: bool) -> None:
    async with running_stub(latency_s=0.05) as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode=mode, policy="sst+deadline", lazy_prediction=False)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: r.max_tokens)) as (gateway, url), \
                httpx.AsyncClient(timeout=30) as client:
            service = gateway.policy.service
            assert service is not None
            for n in (4, 8, 16):
                r = await client.post(url + "/v1/chat/completions", json=_stream(n))
                assert r.status_code == 200 and b"[DONE]" in r.content
            # In priority mode the engine's own queue is inside the TTFT: not service, not learned from.
            assert service.observations == (3 if learns else 0)
