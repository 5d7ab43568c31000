import math

import pytest

from lengthwise.core.policy import Job, make_policy
from lengthwise.core.policy.aging import Aging
from lengthwise.core.policy.mlfq import SkipJoinMLFQ
from lengthwise.core.spec import parse_chain


def test_spec_grammar() -> None:
    assert parse_chain("sjf") == [("sjf", {})]
    assert parse_chain(" SJF + aging: rate=2, max-wait=inf ") == [("sjf", {}), ("aging", {"rate": 2, "max_wait": math.inf})]
    assert parse_chain("srpt:overrun=0.25") == [("srpt", {"overrun": 0.25})]


def test_wrapped_policy_carries_its_parameters() -> None:
    p = make_policy("sjf+aging:rate=2,max_wait=30")
    assert isinstance(p, Aging) and p.base.name == "sjf"
    assert (p.rate, p.max_wait) == (2, 30)
    assert not p.time_invariant and p.piecewise_constant
    assert make_policy("sjf+aging:rate=2").time_invariant


def test_keyword_params_go_to_the_base_policy() -> None:
    p = make_policy("mlfq", levels=3)
    assert isinstance(p, SkipJoinMLFQ) and p.levels == 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("lifo", "unknown policy 'lifo'"),
        ("sjf+slow", "unknown policy wrapper"),
        ("sjf:speed=3", "bad parameters"),
        ("sjf+aging:rate", "KEY=VALUE"),
        ("sjf+aging:rate=-1", "rate must be >= 0"),
        ("rr:quantum=0", "quantum"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_policy(spec)


def test_sjf_can_count_the_prompt_as_work() -> None:
    job = Job("j", 0.0, predicted_tokens=100, prompt_tokens=1000)
    assert make_policy("sjf").key(job, 0) == 100
    assert make_policy("sjf:prompt_weight=0.2").key(job, 0) == 300
