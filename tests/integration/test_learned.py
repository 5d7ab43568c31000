"""The learned predictor wrapping the real self-predictor on the real engine."""

import httpx
import pytest

from lengthwise.predict.base import LengthRequest
from lengthwise.predict.self_query.predictor import SelfPredictor
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import SHIPPED
from lengthwise.predict.learned.rank_stage import load_stage

pytestmark = pytest.mark.integration

TIMEOUT_S = 300.0  # the shared 2-core engine may be busy


def chat(engine, text: str, i: int) -> LengthRequest:
    body = {"model": engine.model, "messages": [{"role": "user", "content": text}], "max_tokens": 32}
    return LengthRequest("chat", body, request_id=f"learned-{i}")


async def test_learned_over_real_self_prediction(engine, tmp_path) -> None:
    prompts = ["Say hi.", "Write a long essay on the history of Rome.", "What is 2 + 2?"]
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        self_predictor = SelfPredictor(client, engine.url, engine.model, timeout_s=TIMEOUT_S)
        predictor = LearnedPredictor(
            self_predictor, embedder=PromptEmbedder(), pretrained=load_stage(SHIPPED),
            state_path=tmp_path / "learned.npz", min_observations=3, retrain_every=3,
        )
        for i, text in enumerate(prompts):
            request = chat(engine, text, i)
            prediction = await predictor.predict(request)
            assert prediction.source == "learned:pretrained" and not prediction.is_fallback
            assert 1 <= prediction.tokens <= 32
            assert prediction.cost.prompt_tokens > 0  # the self-prediction query's cost is carried
            answer = await client.post(engine.url + "/v1/chat/completions", json={**request.body, "temperature": 0})
            predictor.observe(request, prediction, answer.json()["usage"]["completion_tokens"])
        predictor.wait_idle(timeout=120)
        after = await predictor.predict(chat(engine, "Tell me a joke.", 9))
        predictor.close()
    assert after.source == "learned:online" and predictor.observed == 3
    assert (tmp_path / "learned.npz").exists()
