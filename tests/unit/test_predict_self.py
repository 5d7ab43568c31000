"""SelfPredictor against a fake engine: predictions, costs and every fallback."""

import asyncio

import httpx
import pytest

from lengthwise.predict.base import LengthRequest
from lengthwise.testing.fake_engine import FakeEngine
from lengthwise.predict.self_query.predictor import SelfPredictor

URL = "http://engine"


def chat_request(text: str = "Explain TCP.", **extra) -> LengthRequest:
    return LengthRequest("chat", {"model": "m", "messages": [{"role": "user", "content": text}], **extra})


def predictor(engine: FakeEngine | httpx.MockTransport, **kwargs) -> SelfPredictor:
    transport = engine.transport() if isinstance(engine, FakeEngine) else engine
    return SelfPredictor(httpx.AsyncClient(transport=transport), URL, "m", **kwargs)


async def test_chat_prediction_uses_the_distribution() -> None:
    engine = FakeEngine(answer="150")
    prediction = await predictor(engine).predict(chat_request(max_tokens=300))
    assert not prediction.is_fallback
    assert prediction.source == "self:seed"
    # each digit position has "2" as an alternative and the end as another
    assert prediction.features["greedy"] == 150
    assert 1 <= prediction.quantiles[0.1] <= prediction.quantiles[0.5] <= prediction.quantiles[0.9] <= 300
    assert prediction.tokens == pytest.approx(prediction.features["expect"])
    assert prediction.tokens != 150  # the alternatives moved the expectation
    assert prediction.cost.completion_tokens == 4 and prediction.cost.latency_s > 0
    sent = engine.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert "maximum response length is 300 tokens" in sent["body"]["messages"][0]["content"]
    assert sent["body"]["priority"] == -1_000_000


async def test_completion_prediction_and_default_max_tokens() -> None:
    engine = FakeEngine(answer="about 80 tokens")
    request = LengthRequest("completion", {"model": "m", "prompt": "Write a haiku."})
    prediction = await predictor(engine, max_tokens_limit=256).predict(request)
    assert not prediction.is_fallback
    assert engine.requests[0]["path"] == "/v1/completions"
    assert "256 tokens" in engine.requests[0]["body"]["prompt"]
    assert prediction.features["greedy"] == 80


async def test_scale_postfix_maps_labels_to_lengths() -> None:
    engine = FakeEngine(answer="3", alternatives={"4": -1.0})
    prediction = await predictor(engine, postfix="scale").predict(chat_request())
    assert prediction.source == "self:scale"
    assert prediction.features["greedy"] == 180
    assert 180 < prediction.tokens < 350


async def test_request_backend_overrides_the_default_url() -> None:
    engine = FakeEngine()
    await predictor(engine).predict(LengthRequest("chat", chat_request().body, backend="http://other:9/"))
    assert len(engine.requests) == 1


async def test_unparseable_answer_falls_back_with_reason_and_cost() -> None:
    prediction = await predictor(FakeEngine(answer="I can't say", alternatives={}), fallback_tokens=99).predict(chat_request())
    assert prediction.is_fallback and prediction.tokens == 99
    assert "no number" in prediction.fallback_reason
    assert prediction.cost.completion_tokens > 0


async def test_http_error_falls_back() -> None:
    prediction = await predictor(FakeEngine(status=500)).predict(chat_request())
    assert prediction.is_fallback and "HTTP 500" in prediction.fallback_reason


async def test_transport_error_falls_back() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    prediction = await predictor(httpx.MockTransport(refuse)).predict(chat_request())
    assert prediction.is_fallback and "ConnectError" in prediction.fallback_reason


async def test_timeout_falls_back() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    prediction = await predictor(httpx.MockTransport(slow), timeout_s=0.05).predict(chat_request())
    assert prediction.is_fallback and "timeout" in prediction.fallback_reason


async def test_malformed_engine_answer_falls_back() -> None:
    prediction = await predictor(httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": []}))).predict(
        chat_request()
    )
    assert prediction.is_fallback and "IndexError" in prediction.fallback_reason


@pytest.mark.parametrize(
    "request_",
    [
        LengthRequest("chat", {"messages": []}),
        chat_request(n=2),
        chat_request(tools=[{"type": "function", "function": {"name": "f"}}]),
        LengthRequest("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ],
)
async def test_bad_input_falls_back_without_querying(request_: LengthRequest) -> None:
    engine = FakeEngine()
    prediction = await predictor(engine).predict(request_)
    assert prediction.is_fallback and prediction.fallback_reason
    assert engine.requests == []


async def test_prompt_longer_than_the_limit_falls_back() -> None:
    engine = FakeEngine()
    prediction = await predictor(engine, max_prompt_tokens=10).predict(chat_request("word " * 50))
    assert prediction.is_fallback and "longer than 10" in prediction.fallback_reason
    assert engine.requests == []
    assert prediction.features["prompt_tokens"] > 10


async def test_streaming_request_is_predicted_with_a_non_streaming_query() -> None:
    engine = FakeEngine()
    request = chat_request(stream=True)
    prediction = await predictor(engine).predict(request)
    assert not prediction.is_fallback
    assert engine.requests[0]["body"]["stream"] is False
    assert request.body["stream"] is True
