"""Parsing the model's free-text length answers."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lengthwise.predict.self_query.parse import parse_label, parse_length


@pytest.mark.parametrize(
    ("text", "value", "low", "high"),
    [
        ("150", 150, 150, 150),
        ("about 150 tokens", 150, 150, 150),
        ("~200", 200, 200, 200),
        ("150-200", 175, 150, 200),
        ("Between 150 and 200 tokens", 175, 150, 200),
        ("150 to 200", 175, 150, 200),
        ("200–150", 175, 150, 200),
        ("1,500 tokens", 1500, 1500, 1500),
        ("1.5k", 1500, 1500, 1500),
        ("two hundred", 200, 200, 200),
        ("two hundred and fifty tokens", 250, 250, 250),
        ("Twenty-five", 25, 25, 25),
        ("a hundred", 100, 100, 100),
        ("The answer is approximately 300.", 300, 300, 300),
    ],
)
def test_numbers_ranges_and_words(text: str, value: float, low: float, high: float) -> None:
    parsed = parse_length(text)
    assert (parsed.value, parsed.low, parsed.high, parsed.reason) == (value, low, high, None)


@pytest.mark.parametrize("text", ["", "   ", "junk", "a few", "I cannot predict that.", "many tokens"])
def test_junk_gives_no_value_and_a_reason(text: str) -> None:
    parsed = parse_length(text)
    assert parsed.value is None
    assert parsed.reason


@given(st.text())
def test_never_raises(text: str) -> None:
    parsed = parse_length(text)
    assert (parsed.value is None) == (parsed.reason is not None)


def test_scale_labels() -> None:
    labels = {"1": 15.0, "2": 60.0}
    assert parse_label("2.", labels).value == 60.0
    assert parse_label("I'd say 1", labels).value == 15.0
    assert parse_label("7", labels).reason
