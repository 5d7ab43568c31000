"""Predictors from nested specs."""

import httpx
import pytest

from lengthwise.predict.auto.selector import AutoPredictor
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


def test_calibration_features_are_a_list() -> None:
    flat = make_predictor("prompt-length:calibrate=huber,features=prompt_tokens|max_tokens")
    nested = make_predictor("prompt-length(calibrate=huber, features=[prompt_tokens, max_tokens])")
    assert isinstance(flat, CalibratedPredictor) and isinstance(nested, CalibratedPredictor)
    assert flat.calibrator.features == nested.calibrator.features == ("prompt_tokens", "max_tokens")
    with pytest.raises(ValueError, match=r"not a '\+' chain \(a list is \[A, B\]\)"):
        make_predictor("prompt-length:calibrate=huber,features=prompt_tokens+max_tokens")

