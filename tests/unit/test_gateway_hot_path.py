"""Prediction off the gateway's hot path: a big prompt holds up nobody, a deadline ends a prediction,
and a request that nothing waits ahead of is not held for its prediction, which is still learned from."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import numpy as np

from lengthwise.gateway.config import GatewayConfig
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import SHIPPED, Pretrained
from lengthwise.predict.registry import make_predictor
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub


def _chat(text: str, max_tokens: int = 4) -> dict:
    return {"model": "stub-model", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


async def _timed_post(client: httpx.AsyncClient, url: str, **kwargs: object) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.post(url + "/v1/chat/completions", **kwargs)  # type: ignore[arg-type]
    return response, time.perf_counter() - started


async def test_a_big_prompt_does_not_hold_up_the_other_requests() -> None:
    """The learned predictor with its real embedding and TF-IDF, awaited by every request: a 6 MB
    prompt was tokenized whole, holding the GIL for tens of seconds, and froze all other traffic."""
    predictor = make_predictor("learned:wrap=none")
    big = json.dumps(_chat("All work and no play makes Jack a dull boy. " * 140_000, 1)).encode()  # 6.2 MB
    async with running_stub(record=False) as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), backend_seats=0, prediction_timeout_s=30)
        async with running_gateway(config, predictor=predictor) as (_, url), httpx.AsyncClient(timeout=60) as client:
            await client.post(url + "/v1/chat/completions", json=_chat("warm up: load the models"))
            big_answer = asyncio.create_task(_timed_post(client, url, content=big,
                                                         headers={"content-type": "application/json"}))
            small = []
            for i in range(10):
                await asyncio.sleep(0.02)
                small.append(await _timed_post(client, url, json=_chat(f"a small question, number {i}")))
            response, big_s = await big_answer
    assert response.status_code == 200 and all(r.status_code == 200 for r, _ in small)
    assert max(seconds for _, seconds in small) < 1.0
    assert float(response.headers["x-lengthwise-prediction-ms"]) < 2000 and big_s < 5


class _StuckEmbedder:
    """An embedding model that never answers (until released): the prediction must be abandoned."""

    dimension = 384

    def __init__(self) -> None:
        self.release = threading.Event()

    def embed_many(self, texts: list[str]) -> np.ndarray:
        self.release.wait(30)
        return np.zeros((len(texts), self.dimension))


async def test_a_prediction_that_hangs_is_abandoned_at_the_deadline() -> None:
    embedder = _StuckEmbedder()
    predictor = LearnedPredictor(None, embedder=embedder, pretrained=Pretrained.load(SHIPPED))
    try:
        async with running_stub() as (stub, stub_url):
            config = GatewayConfig(backends=(stub_url,), prediction_timeout_s=0.2, fallback_tokens=33)
            async with running_gateway(config, predictor=predictor) as (_, url), \
                    httpx.AsyncClient(timeout=30) as client:
                answers = await asyncio.gather(*(_timed_post(client, url, json=_chat(f"question {i}"))
                                                 for i in range(5)))
                for response, seconds in answers:
                    assert response.status_code == 200 and seconds < 1.5
                    assert response.headers["x-lengthwise-predictor"] == "learned;fallback"
                    assert response.headers["x-lengthwise-predicted-tokens"] == "33.0"
                assert len(stub.received) == 5
    finally:
        embedder.release.set()


async def test_a_request_with_a_free_seat_goes_before_its_prediction_and_is_still_learned_from() -> None:
    predictor = FunctionPredictor(lambda r: 7.0, delay_s=0.5)
    async with running_stub() as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=2, fallback_tokens=50)
        async with running_gateway(config, predictor=predictor) as (gateway, url), \
                httpx.AsyncClient(timeout=30) as client:
            response, seconds = await _timed_post(client, url, json=_chat("nothing waits for this one"))
            assert response.status_code == 200 and seconds < 0.4  # did not wait 0.5 s for its prediction
            assert response.headers["x-lengthwise-predictor"] == "deferred;fallback"
            assert response.headers["x-lengthwise-predicted-tokens"] == "50.0"
            assert predictor.observed == []  # its prediction is still under way
            await gateway.completions.predicting.settle()
            assert predictor.observed == [(response.headers["x-lengthwise-request-id"], 7.0, 4)]
            metrics = (await client.get(url + "/metrics")).text
            assert 'lengthwise_predictions_total{outcome="deferred",predictor="function"} 1.0' in metrics


async def test_priority_mode_predicts_lazily_below_the_backends_seats() -> None:
    predictor = FunctionPredictor(lambda r: 7.0, delay_s=0.3)
    async with running_stub(latency_s=0.5) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), backend_seats=1, policy="sjf")  # priority = tokens
        async with running_gateway(config, predictor=predictor) as (gateway, url), \
                httpx.AsyncClient(timeout=30) as client:
            first = asyncio.create_task(_timed_post(client, url, json=_chat("first")))
            await asyncio.sleep(0.1)
            second, _ = await _timed_post(client, url, json=_chat("second"))  # the seat is taken: it waits
            first_response, _ = await first
            assert first_response.headers["x-lengthwise-predictor"] == "deferred;fallback"
            assert second.headers["x-lengthwise-predictor"] == "function"
            assert [r.body["priority"] for r in stub.received] == [256, 7]
            await gateway.completions.predicting.settle()
            assert sorted(tokens for _, tokens, _ in predictor.observed) == [7.0, 7.0]
