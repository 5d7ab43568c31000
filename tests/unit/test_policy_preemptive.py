from hypothesis import given
from hypothesis import strategies as st

from lengthwise.core.policy import Job, make_policy


@given(st.floats(min_value=0, max_value=5000), st.integers(min_value=0, max_value=20000), st.floats(0, 2))
def test_srpt_remaining_is_never_negative_and_grows_past_the_prediction(pred: float, g: int, overrun: float) -> None:
    p = make_policy("srpt", overrun=overrun)
    key = p.key(Job("j", 0, predicted_tokens=pred, generated_tokens=g), 0)
    assert key >= 0
    assert key >= pred - g
    assert key >= overrun * g - 1e-9


def test_srpt_reestimates_a_request_that_outlived_its_prediction() -> None:
    p = make_policy("srpt:overrun=0.5")
    assert p.key(Job("j", 0, predicted_tokens=100, generated_tokens=40), 0) == 60
    assert p.key(Job("j", 0, predicted_tokens=100, generated_tokens=300), 0) == 150


@given(st.integers(min_value=0, max_value=4000), st.integers(min_value=0, max_value=3000))
def test_mlfq_demotes_as_service_grows_and_quanta_mark_the_boundaries(prompt: int, g: int) -> None:
    p = make_policy("mlfq:levels=5,base_quantum=4,prefill_ratio=64")
    job = Job("j", 0, prompt_tokens=prompt, generated_tokens=g)
    level, left = p.key(job, 0), p.quantum(job)
    later = Job("j", 0, prompt_tokens=prompt, generated_tokens=g + 1)
    assert p.key(later, 0) >= level
    if left is not None:
        assert left >= 1
        before_boundary = Job("j", 0, prompt_tokens=prompt, generated_tokens=g + int(left) - 1)
        at_boundary = Job("j", 0, prompt_tokens=prompt, generated_tokens=g + int(left))
        assert p.key(before_boundary, 0) == level
        assert p.key(at_boundary, 0) == level + 1
    else:
        assert level == 4


def test_mlfq_skip_join_puts_long_prompts_below_the_top() -> None:
    p = make_policy("mlfq:levels=5,base_quantum=4,prefill_ratio=64")
    assert p.key(Job("short", 0, prompt_tokens=100), 0) == 0  # 1.6 step-equivalents <= 4
    assert p.key(Job("long", 0, prompt_tokens=1000), 0) == 2  # 15.6 > 8, <= 16


def test_round_robin_counts_rounds_of_quantum_tokens() -> None:
    p = make_policy("rr:quantum=3")
    assert [p.key(Job("j", 0, generated_tokens=g), 0) for g in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert [p.quantum(Job("j", 0, generated_tokens=g)) for g in (0, 2, 3)] == [3, 1, 3]
