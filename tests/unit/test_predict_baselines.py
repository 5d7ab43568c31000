"""Baselines and the predictor registry."""

import json

import httpx
import pytest

from lengthwise.predict.base import LengthRequest, Predictor
from lengthwise.predict.baselines import ConstantPredictor, OraclePredictor, PromptLengthPredictor, prompt_hash
from lengthwise.predict.calibration import CalibratedPredictor
from lengthwise.predict.registry import make_predictor
from lengthwise.predict.self_query.predictor import SelfPredictor


def chat(text: str, **extra) -> LengthRequest:
    return LengthRequest("chat", {"messages": [{"role": "user", "content": text}], **extra})


async def test_constant_is_the_same_for_every_request() -> None:
    predictor = ConstantPredictor(100)
    assert isinstance(predictor, Predictor)
    assert (await predictor.predict(chat("a"))).tokens == (await predictor.predict(chat("b " * 99))).tokens == 100


async def test_prompt_length_counts_tokens_and_falls_back_on_bad_input() -> None:
    predictor = PromptLengthPredictor(ratio=2.0)
    short, long = await predictor.predict(chat("hi")), await predictor.predict(chat("hello there " * 50, max_tokens=640))
    assert short.tokens < long.tokens
    assert long.features["prompt_tokens"] * 2 == long.tokens and long.features["max_tokens"] == 640
    bad = await predictor.predict(LengthRequest("chat", {"messages": []}))
    assert bad.is_fallback and bad.tokens == 256


async def test_prompt_length_prediction_is_capped_by_max_tokens() -> None:
    """Was 1,580,002 tokens predicted for a huge prompt with `max_tokens: 1`: the engine stops at the cap."""
    predictor = PromptLengthPredictor(ratio=2.0)
    capped = await predictor.predict(chat("hello there " * 500, max_tokens=1))
    assert capped.tokens == 1 and capped.features["prompt_tokens"] > 500
    assert (await predictor.predict(chat("hello there " * 500, max_tokens=30))).tokens == 30


def test_prompt_hash_ignores_everything_but_roles_and_texts() -> None:
    assert prompt_hash(chat("q", max_tokens=5, stream=True)) == prompt_hash(chat("q"))
    assert prompt_hash(chat("q")) != prompt_hash(chat("r"))
    assert prompt_hash(LengthRequest("completion", {"prompt": "q"})) != prompt_hash(chat("q"))


async def test_oracle_from_eval_jsonl_and_from_a_dict(tmp_path) -> None:
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text(json.dumps({"id": "a", "prompt_hash": prompt_hash(chat("q")), "actual_tokens": 321}) + "\n")
    oracle = OraclePredictor.from_file(jsonl, default=7.0)
    assert (await oracle.predict(chat("q"))).tokens == 321
    unknown = await oracle.predict(chat("other"))
    assert unknown.is_fallback and unknown.tokens == 7.0
    as_dict = tmp_path / "lengths.json"
    as_dict.write_text(json.dumps({prompt_hash(chat("q")): 12}))
    assert (await OraclePredictor.from_file(as_dict).predict(chat("q"))).tokens == 12


def test_registry_specs(tmp_path) -> None:
    client = httpx.AsyncClient()
    self_predictor = make_predictor("self:postfix=fewshot,timeout=2.5,priority=none", client=client, base_url="http://e")
    assert isinstance(self_predictor, SelfPredictor)
    assert (self_predictor.postfix.name, self_predictor.timeout_s, self_predictor.priority) == ("fewshot", 2.5, None)
    from_deps = make_predictor("self", client=client, priority=-3, fallback_tokens=99.0)
    assert (from_deps.priority, from_deps.fallback_tokens, from_deps.base_url) == (-3, 99.0, None)
    assert make_predictor("constant:tokens=50").tokens == 50
    assert isinstance(make_predictor("prompt-length", fallback_tokens=5.0), PromptLengthPredictor)
    calibrated = make_predictor(f"prompt-length:calibration={tmp_path / 'c.json'},calibrate=isotonic")
    assert isinstance(calibrated, CalibratedPredictor)
    assert calibrated.calibrator.features == ("prompt_tokens",) and calibrated.calibrator.method == "isotonic"
    jsonl = tmp_path / "o.jsonl"
    jsonl.write_text(json.dumps({"prompt_hash": "x", "actual_tokens": 3}) + "\n")
    assert make_predictor(f"oracle:path={jsonl}").lengths == {"x": 3.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("magic", "unknown predictor"),
        ("self", "httpx.AsyncClient"),
        ("constant:size=3", "unknown options"),
        ("constant:tokens", "not key=value"),
        ("oracle", "needs path"),
        ("learned(wrap=magic)", "unknown predictor 'magic'"),
        ("auto(candidates=[prompt-length, 5])", "expected a spec, got 5"),
        ("constant(tokens=many)", "constant: bad option"),
        ("prompt-length(ratio=[1, 2])", "prompt-length: bad option"),
    ],
)
def test_registry_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_predictor(spec)
