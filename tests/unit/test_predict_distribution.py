"""Length distributions from synthetic top logprobs."""

import math

import pytest

from lengthwise.predict.self_query.distribution import (
    LengthDistribution,
    Position,
    label_distribution,
    number_distribution,
    positions_from_chat,
    positions_from_completion,
)

L = math.log
END = "<|im_end|>"


def test_digit_beam_enumerates_numbers_and_termination() -> None:
    positions = [
        Position("1", {"1": L(0.5), "2": L(0.3), "The": L(0.2)}),
        Position("0", {"0": L(0.6), END: L(0.4)}),
        Position(END, {END: L(0.9), "0": L(0.1)}),
    ]
    dist = number_distribution(positions)
    assert dist is not None
    probs = dict(zip(dist.values, dist.probs, strict=True))
    # mass 0.8 covered ("The" at the first digit is not a number); each path renormalized by it
    assert dist.mass == pytest.approx(0.8)
    assert probs[1.0] == pytest.approx(0.5 * 0.4 / 0.8)
    assert probs[10.0] == pytest.approx(0.5 * 0.6 * 0.9 / 0.8)
    assert probs[100.0] == pytest.approx(0.5 * 0.6 * 0.1 / 0.8)  # open past the end: taken as ended
    assert probs[20.0] == pytest.approx(0.3 * 0.6 * 0.9 / 0.8)  # the greedy continuation reused
    assert sum(dist.probs) == pytest.approx(1.0)
    assert dist.top() == 10.0


def test_number_after_words_and_leading_space() -> None:
    positions = [
        Position("About", {"About": 0.0}),
        Position(" 2", {" 2": L(0.7), " 3": L(0.3)}),
        Position("0", {"0": 0.0}),
        Position(" tokens", {" tokens": 0.0}),
    ]
    dist = number_distribution(positions)
    assert dist is not None
    assert dist.values == (20.0, 30.0)
    assert dist.probs == pytest.approx((0.7, 0.3))
    assert dist.mean() == pytest.approx(23.0)


def test_no_number_gives_none() -> None:
    assert number_distribution([Position("I", {"I": 0.0}), Position(" think", {" think": 0.0})]) is None
    assert number_distribution([]) is None


def test_summary_quantiles_entropy_and_clipping() -> None:
    dist = LengthDistribution.from_weights({10.0: 0.5, 100.0: 0.3, 1000.0: 0.2})
    assert dist is not None
    clipped = dist.clipped(1, 512)
    assert clipped.values == (10.0, 100.0, 512.0)
    summary = clipped.summary()
    assert summary["expect"] == pytest.approx(0.5 * 10 + 0.3 * 100 + 0.2 * 512)
    assert (summary["q10"], summary["q50"], summary["q90"]) == (10.0, 10.0, 512.0)
    assert summary["entropy"] == pytest.approx(-sum(p * math.log(p) for p in (0.5, 0.3, 0.2)))
    assert LengthDistribution.from_json(clipped.to_json()) == clipped


def test_scale_labels() -> None:
    labels = {"1": 15.0, "2": 60.0, "3": 180.0}
    positions = [Position("2", {"2": L(0.6), " 3": L(0.2), "x": L(0.2)})]
    dist = label_distribution(positions, labels)
    assert dist is not None
    assert dist.values == (60.0, 180.0)
    assert dist.probs == pytest.approx((0.75, 0.25))
    assert label_distribution([Position("x", {"x": 0.0})], labels) is None


def test_positions_from_openai_shapes() -> None:
    chat = {
        "content": [
            {"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "5", "logprob": -2.0}]},
            {"token": END, "logprob": -0.2, "top_logprobs": []},
        ]
    }
    assert positions_from_chat(chat) == [Position("4", {"5": -2.0, "4": -0.1}), Position(END, {END: -0.2})]
    completion = {"tokens": ["4", "2"], "token_logprobs": [-0.1, -0.3], "top_logprobs": [{"5": -2.0}, None]}
    assert positions_from_completion(completion) == [Position("4", {"5": -2.0, "4": -0.1}), Position("2", {"2": -0.3})]
    assert positions_from_chat(None) == [] and positions_from_completion(None) == []
