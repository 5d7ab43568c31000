"""`Predictor.aclose`: wrappers close what they wrap, and persisted predictors save what they
learned since their last periodic save."""

from __future__ import annotations

import asyncio
import json
from unittest.mock import AsyncMock

from lengthwise.predict.auto.selector import AutoPredictor
from lengthwise.predict.base import LengthRequest, Predictor
from lengthwise.predict.baselines import ConstantPredictor, PromptLengthPredictor
from lengthwise.predict.calibration import CalibratedPredictor, Calibrator
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.testing.gateway import FunctionPredictor


def _request(i: int) -> LengthRequest:
    return LengthRequest("chat", {"messages": [{"role": "user", "content": f"question {i} " * (i + 1)}],
                                  "max_tokens": 10 * (i + 1)}, f"r{i}")


def _closing(predictor: Predictor) -> Predictor:
    predictor.aclose = AsyncMock()  # type: ignore[method-assign]
    return predictor


async def _feed(predictor: Predictor, requests: int) -> None:
    for i in range(requests):
        request = _request(i)
        prediction = await predictor.predict(request)
        await asyncio.sleep(0)  # auto's candidates not chosen predict in the background, while the request runs
        predictor.observe(request, prediction, request.max_tokens or 0)


async def test_a_plain_predictor_has_nothing_to_close() -> None:
    await ConstantPredictor(7).aclose()


async def test_calibration_saves_between_its_periodic_saves_and_closes_the_inner(tmp_path) -> None:
    inner = _closing(PromptLengthPredictor())
    path = tmp_path / "cal.json"
    wrapped = CalibratedPredictor(inner, Calibrator(features=("prompt_tokens",)), path, save_every=10)
    await _feed(wrapped, 3)
    assert not path.exists()
    await wrapped.aclose()
    assert len(Calibrator.load(path).ys) == 3
    inner.aclose.assert_awaited_once()  # type: ignore[attr-defined]


async def test_auto_saves_its_evidence_and_closes_every_candidate(tmp_path) -> None:
    candidates = [_closing(FunctionPredictor(lambda r: r.max_tokens, name=name)) for name in ("a", "b")]
    path = tmp_path / "auto.json"
    auto = AutoPredictor(candidates, state_path=path, recheck=10)
    await _feed(auto, 3)
    assert not path.exists()
    await auto.aclose()
    assert {name: len(pairs) for name, pairs in json.loads(path.read_text())["windows"].items()} == {"a": 3, "b": 3}
    for candidate in candidates:
        candidate.aclose.assert_awaited_once()  # type: ignore[attr-defined]


async def test_learned_learns_what_is_pending_saves_and_closes_the_inner(tmp_path) -> None:
    inner = _closing(FunctionPredictor(lambda r: 10.0, name="self"))
    path = tmp_path / "learned.npz"
    learned = LearnedPredictor(inner, state_path=path, retrain_every=10)
    await _feed(learned, 3)
    assert not path.exists()
    await learned.aclose()
    assert LearnedPredictor(state_path=path, inner=FunctionPredictor(lambda r: 1.0)).observed == 3
    inner.aclose.assert_awaited_once()  # type: ignore[attr-defined]
