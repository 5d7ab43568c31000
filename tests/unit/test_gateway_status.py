"""/lengthwise/status and the predictor-choice metrics, through the gateway with a stub backend."""

import random

import httpx

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub
from lengthwise.predict.auto.selector import AutoPredictor


async def _drive(url: str, requests: int) -> None:
    rng = random.Random(0)
    async with httpx.AsyncClient() as client:
        for i in range(requests):
            body = {"model": "stub-model", "messages": [{"role": "user", "content": f"q{i}"}],
                    "max_tokens": rng.randint(1, 64)}  # the stub answers max_tokens tokens
            assert (await client.post(url + "/v1/chat/completions", json=body)).status_code == 200


async def test_status_and_metrics_report_the_choice_after_a_few_dozen_requests() -> None:
    noise = random.Random(1)
    auto = AutoPredictor([FunctionPredictor(lambda r: noise.random(), name="noise"),
                          FunctionPredictor(lambda r: r.max_tokens + noise.uniform(-8, 8), name="signal")],
                         min_requests=20)
    async with running_stub() as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=2)
        async with running_gateway(config, predictor=auto) as (gateway, url), httpx.AsyncClient() as client:
            before = (await client.get(url + "/lengthwise/status")).json()
            assert before["status"]["choice"] == "none" and before["predictor"] == "auto"
            await _drive(url, 36)
            await gateway.completions.predicting.settle()  # the predictor learns in the background
            status = (await client.get(url + "/lengthwise/status")).json()
            metrics = (await client.get(url + "/metrics")).text
    selection = status["status"]
    assert selection["choice"] == "signal" and status["policy"] == "sst+deadline"
    assert selection["candidates"]["signal"]["n"] == 36 and selection["candidates"]["signal"]["ci_low"] > 0
    assert selection["candidates"]["noise"]["ci_low"] <= 0
    assert 'lengthwise_predictor_chosen{predictor="signal"} 1.0' in metrics
    assert 'lengthwise_predictor_chosen{predictor="none"} 0.0' in metrics
    assert 'lengthwise_predictor_window_requests{predictor="noise"} 36.0' in metrics


async def test_status_of_a_predictor_that_does_not_choose() -> None:
    plain, reporting = FunctionPredictor(lambda r: 1.0), FunctionPredictor(lambda r: 1.0, name="learning")
    reporting.status = lambda: {"stage": "cold"}  # type: ignore[attr-defined]  # as LearnedPredictor reports
    async with running_stub() as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,))
        for predictor, expected in ((plain, None), (reporting, {"stage": "cold"})):
            async with running_gateway(config, predictor=predictor) as (_, url), httpx.AsyncClient() as client:
                status = (await client.get(url + "/lengthwise/status")).json()
                metrics = (await client.get(url + "/metrics")).text
            assert status == {"mode": "priority", "policy": "sst+deadline", "predictor": predictor.name, "status": expected,
                              "query_window": None, "redis": None}
            assert "lengthwise_predictor_chosen" not in metrics
