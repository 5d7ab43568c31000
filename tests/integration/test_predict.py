"""Self-prediction on the real engine: a real prediction, and the prefix it leaves for the real request."""

import uuid

import httpx
import pytest

from lengthwise.predict.base import LengthRequest
from lengthwise.predict.self_query.predictor import SelfPredictor
from lengthwise.core.usage import cached_tokens

pytestmark = pytest.mark.integration

TIMEOUT_S = 300.0  # the shared 2-core engine may be busy


def long_prompt() -> str:
    """A fresh (never cached) prompt of well over 256 tokens."""
    facts = " ".join(f"Fact {i}: the value of item {i} is {i * 7 % 13}." for i in range(40))
    return f"[{uuid.uuid4()}] Here are some facts. {facts} Which item has the largest value?"


async def test_real_prediction_is_parsed_or_clearly_reasoned(engine) -> None:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        predictor = SelfPredictor(client, engine.url, engine.model, timeout_s=TIMEOUT_S)
        body = {"model": engine.model, "messages": [{"role": "user", "content": "What is the capital of Spain?"}]}
        prediction = await predictor.predict(LengthRequest("chat", {**body, "max_tokens": 64}))
    if prediction.is_fallback:
        assert "answer" in prediction.fallback_reason  # the model said something unparseable, not an error
    else:
        assert 1 <= prediction.tokens <= 64
        assert 0 < prediction.features["mass"] <= 1 and prediction.quantiles
    assert prediction.cost.prompt_tokens > 0 and prediction.cost.completion_tokens > 0


@pytest.mark.parametrize("endpoint", ["chat", "completion"])
async def test_real_request_right_after_reuses_the_prefix(engine, endpoint: str) -> None:
    text = long_prompt()
    if endpoint == "chat":
        body = {"model": engine.model, "messages": [{"role": "user", "content": text}], "max_tokens": 4}
        path = "/v1/chat/completions"
    else:
        body = {"model": engine.model, "prompt": text, "max_tokens": 4}
        path = "/v1/completions"
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        predictor = SelfPredictor(client, engine.url, engine.model, timeout_s=TIMEOUT_S, priority=None)
        prediction = await predictor.predict(LengthRequest(endpoint, body))  # type: ignore[arg-type]
        assert prediction.cost.prompt_tokens > 256, prediction
        real = (await client.post(engine.url + path, json={**body, "temperature": 0})).json()
    assert real["usage"]["prompt_tokens"] > 256
    assert cached_tokens(real["usage"]) >= 128
