"""Kendall tau-b with a jackknife interval over a sliding window."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import kendalltau

from lengthwise.core.stats import kendall_tau_ci
from lengthwise.predict.auto.quality import QualityWindow

lengths = st.lists(st.integers(1, 4096), min_size=5, max_size=120, unique=True)


@given(lengths, st.sampled_from([lambda v: v, lambda v: math.log(v), lambda v: 3 * v + 7]))
@settings(max_examples=40, deadline=None)
def test_a_perfect_ranking_has_tau_one_and_excludes_zero(actual: list[int], transform) -> None:
    q = kendall_tau_ci(np.array([transform(v) for v in actual]), np.array(actual))
    assert q.tau == pytest.approx(1.0)
    assert q.significant and q.low <= q.tau <= q.high


@given(lengths)
@settings(max_examples=30, deadline=None)
def test_a_reversed_ranking_has_tau_minus_one(actual: list[int]) -> None:
    q = kendall_tau_ci(-np.array(actual, dtype=float), np.array(actual))
    assert q.tau == pytest.approx(-1.0) and not q.significant


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=3, max_size=80))
@settings(max_examples=60, deadline=None)
def test_tau_b_agrees_with_scipy_ties_included(pairs: list[tuple[int, int]]) -> None:
    x, y = np.array(pairs, dtype=float).T
    q = kendall_tau_ci(x, y)
    expected = kendalltau(x, y).statistic
    if math.isnan(expected):
        assert q.tau is None
    else:
        assert q.tau == pytest.approx(expected)
        if q.low is not None:
            assert q.low <= q.tau <= q.high


def test_random_predictions_contain_zero_at_about_the_confidence_level() -> None:
    rng = np.random.default_rng(7)
    trials = [kendall_tau_ci(rng.normal(size=100), rng.lognormal(size=100)) for _ in range(100)]
    contains = sum(q.low <= 0 <= q.high for q in trials)
    assert contains >= 88, contains  # 95% nominal; the jackknife is a little narrow at n=100


def test_a_constant_predictor_has_no_tau() -> None:
    q = kendall_tau_ci(np.full(50, 10.0), np.arange(50.0))
    assert q.tau is None and not q.significant and q.n == 50


def test_the_window_keeps_only_the_last_requests_and_caches() -> None:
    window = QualityWindow(size=10)
    for v in range(20):  # first 10 reversed, last 10 in order
        window.add(-v if v < 10 else v, v)
    window.add(float("nan"), 3)  # ignored
    assert len(window) == 10
    q = window.quality()
    assert q.tau == pytest.approx(1.0) and window.quality() is q
    window.add(0.0, 1000.0)
    assert window.quality() is not q and window.quality().tau < 1


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError):
        QualityWindow(size=2)
    with pytest.raises(ValueError):
        QualityWindow(confidence=1.5)


def test_pairs_round_trip_into_a_smaller_window() -> None:
    window = QualityWindow(size=10)
    window.extend((float(v), float(2 * v)) for v in range(10))
    smaller = QualityWindow(size=4)
    smaller.extend([*window.pairs(), (math.inf, 1.0)])  # the non-finite pair is ignored, as by add
    assert smaller.pairs() == [(6.0, 12.0), (7.0, 14.0), (8.0, 16.0), (9.0, 18.0)]
    assert smaller.quality().tau == pytest.approx(1.0)
