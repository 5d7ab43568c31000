"""The one spec grammar of policies and predictors: flat command-line forms, nesting, errors."""

import math

import pytest

from lengthwise.core.spec import Spec, as_spec, parse_chain, parse_params, parse_spec

NESTED = "auto(candidates=[learned(wrap=self(postfix=fewshot, timeout=5)), prompt-length])"
LEARNED_SELF = Spec("learned", {"wrap": Spec("self", {"postfix": "fewshot", "timeout": 5})})


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        # The flat forms of the docs, the README, the benchmarks and the gateway's default.
        ("sjf:prompt_weight=0.2+aging:max_wait=60", [Spec("sjf", {"prompt_weight": 0.2}), Spec("aging", {"max_wait": 60})]),
        ("learned:wrap=none", [Spec("learned", {"wrap": None})]),
        ("auto:candidates=learned:wrap=none|self|prompt-length,state=~/.cache/lengthwise/auto.json",
         [Spec("auto", {"candidates": [Spec("learned", {"wrap": None}), "self", "prompt-length"],
                        "state": "~/.cache/lengthwise/auto.json"})]),
        ("learned:wrap=self:postfix=fewshot;timeout=5,state=s.npz",
         [Spec("learned", {"wrap": Spec("self", {"postfix": "fewshot", "timeout": 5}), "state": "s.npz"})]),
        ("auto:candidates=prompt-length|constant:tokens=5;calibrate=huber,sample=0.5",
         [Spec("auto", {"candidates": ["prompt-length", Spec("constant", {"tokens": 5, "calibrate": "huber"})],
                        "sample": 0.5})]),
        ("self:url=http://127.0.0.1:8100,priority=none,model='my model'",
         [Spec("self", {"url": "http://127.0.0.1:8100", "priority": None, "model": "my model"})]),
        # Nesting to any depth with parentheses, alone or inside the flat form.
        (NESTED, [Spec("auto", {"candidates": [LEARNED_SELF, "prompt-length"]})]),
        ("auto:candidates=learned:wrap=self(postfix=fewshot, timeout=5)|prompt-length",
         [Spec("auto", {"candidates": [LEARNED_SELF, "prompt-length"]})]),
        ("sjf( prompt_weight = 0.2 ) + aging(max-wait=inf)",
         [Spec("sjf", {"prompt_weight": 0.2}), Spec("aging", {"max_wait": math.inf})]),
        ("x(items=[], empty=[[]], y=z())", [Spec("x", {"items": [], "empty": [[]], "y": Spec("z", {})})]),
    ],
)
def test_specs_parse_to_trees(text: str, tree: list[Spec]) -> None:
    assert parse_chain(text) == tree


def test_one_spec_params_and_values_that_name_specs() -> None:
    assert parse_spec(NESTED).params["candidates"][0] == LEARNED_SELF
    assert parse_params("tau=0.5, k=5") == {"tau": 0.5, "k": 5} and parse_params(" ") == {}
    assert as_spec("self") == Spec("self", {}) and as_spec(LEARNED_SELF) is LEARNED_SELF
    with pytest.raises(ValueError, match="not a '\\+' chain"):
        parse_spec("sjf+aging")
    with pytest.raises(ValueError, match="expected a spec, got 5"):
        as_spec(5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # The old grammars' depth limit: a flat spec two levels down now names the fix.
        ("auto:candidates=learned:wrap=self:postfix=fewshot;timeout=5|prompt-length",
         r"at character 30, expected a value \(a spec this deep takes its parameters in parentheses"),
        ("sjf+aging:rate", r"at character 15, expected '=' after 'rate'.*found the end"),
        ("auto(candidates=self|prompt-length)", r"at character 21, expected ',' or '\)', found '\|prompt-length\)'"),
        ("x(a=[1, 2)", r"at character 10, expected ',' or '\]'"),
        ("sjf:rate=2)", r"at character 11, expected ',', '\+' or the end"),
        ("sjf+", r"at character 5, expected a name, found the end"),
        ("x(a=1", r"at character 6, expected ',' or '\)', found the end"),
        ("x:=1", r"at character 3, expected KEY=VALUE, found '=1'"),
        ("  ", "empty spec"),
    ],
)
def test_errors_name_the_position_and_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_chain(text)
