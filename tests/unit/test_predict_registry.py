"""Predictors from nested specs, and what wrappers say about their cost."""

import asyncio

import httpx
import pytest

from lengthwise.predict.auto.selector import AutoPredictor
from lengthwise.predict.base import LengthRequest
from lengthwise.predict.calibration import CalibratedPredictor
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.registry import make_predictor
from lengthwise.predict.self_query.predictor import SelfPredictor


def test_a_spec_nested_three_deep_builds_every_level() -> None:
    auto = make_predictor("auto(candidates=[learned(wrap=self(postfix=fewshot, timeout=5)), prompt-length])",
                          client=httpx.AsyncClient(), priority=-7)
    assert isinstance(auto, AutoPredictor) and list(auto.candidates) == ["learned", "prompt-length"]
    learned = auto.candidates["learned"].predictor
    assert isinstance(learned, LearnedPredictor) and isinstance(learned.inner, SelfPredictor)
    assert (learned.inner.postfix.name, learned.inner.timeout_s, learned.inner.priority) == ("fewshot", 5.0, -7)
    assert learned.pretrained is not None and learned.embedder is not None  # the defaults, as in the flat form


def test_wrappers_are_costly_when_what_they_wrap_is() -> None:
    client = httpx.AsyncClient()
    calibrated = make_predictor("self:calibrate=huber", client=client)
    assert isinstance(calibrated, CalibratedPredictor) and calibrated.costly
    assert not make_predictor("prompt-length:calibrate=huber").costly
    assert make_predictor("learned:wrap=self,embedding=0,pretrained=none", client=client).costly
    assert not make_predictor("learned:wrap=none,embedding=0,pretrained=none").costly
    assert make_predictor("auto:candidates=self|prompt-length", client=client).costly
    assert not make_predictor("auto:candidates=prompt-length").costly


async def test_auto_samples_a_learned_self_candidate_instead_of_running_it_on_every_request() -> None:
    auto = make_predictor("auto:candidates=learned:wrap=self;embedding=0;pretrained=none|prompt-length,sample=0",
                          client=httpx.AsyncClient(), base_url="http://127.0.0.1:9")
    assert isinstance(auto, AutoPredictor)
    for i in range(5):
        await auto.predict(LengthRequest("chat", {"messages": [{"role": "user", "content": "hi"}]}, f"r{i}"))
    await asyncio.sleep(0.1)  # the candidates not chosen predict in the background
    learned = auto.status()["candidates"]["learned"]
    assert learned["costly"] and learned["sampled_fraction"] == 0.0
    assert auto.status()["candidates"]["prompt-length"]["sampled_fraction"] == 1.0


def test_calibration_features_are_a_list() -> None:
    flat = make_predictor("prompt-length:calibrate=huber,features=prompt_tokens|max_tokens")
    nested = make_predictor("prompt-length(calibrate=huber, features=[prompt_tokens, max_tokens])")
    assert isinstance(flat, CalibratedPredictor) and isinstance(nested, CalibratedPredictor)
    assert flat.calibrator.features == nested.calibrator.features == ("prompt_tokens", "max_tokens")
    with pytest.raises(ValueError, match=r"not a '\+' chain \(a list is \[A, B\]\)"):
        make_predictor("prompt-length:calibrate=huber,features=prompt_tokens+max_tokens")

