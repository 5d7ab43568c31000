"""Rank agreement between predicted and actual lengths: Kendall's tau-b, and its confidence interval.

A scheduler only needs the order of predictions to be right, so this is the measure
everywhere lengthwise grades a predictor (1: same order, 0: no information, -1: reversed).
The interval is a jackknife: the jackknife of a U-statistic is consistent and costs one
O(n²) pass here, since leaving out request i removes row i of the pairwise sign
matrices, so every leave-one-out tau comes from row sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import kendalltau, norm


def kendall_tau(predicted: ArrayLike, actual: ArrayLike) -> float:
    """Kendall's tau-b (scipy); NaN when undefined: fewer than two pairs, or either side constant."""
    x, y = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if x.size < 2:
        return float("nan")
    return float(kendalltau(x, y).statistic)


@dataclass(frozen=True)
class RankQuality:
    """Kendall's tau-b of a window with its two-sided confidence interval.

    `tau` is None when it is undefined: fewer than two requests, or every prediction (or
    every actual length) the same; such a predictor carries no ranking information.
    """

    n: int
    tau: float | None
    low: float | None
    high: float | None

    @property
    def significant(self) -> bool:
        """True when the whole interval is above 0: better than no information."""
        return self.low is not None and self.low > 0

    def to_dict(self) -> dict[str, float | int | None]:
        return {"n": self.n, "tau": _round(self.tau), "ci_low": _round(self.low), "ci_high": _round(self.high)}


def _tau_and_leave_one_out(x: np.ndarray, y: np.ndarray) -> tuple[float | None, np.ndarray | None]:
    """Tau-b and the n leave-one-out tau-bs (None where undefined), from one O(n²) pass."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    # Row sums: concordance minus discordance, and the untied pairs of x and of y, per request.
    s_row = (sx * sy).sum(axis=1)
    x_row = np.abs(sx).sum(axis=1)
    y_row = np.abs(sy).sum(axis=1)
    s, dx, dy = s_row.sum(), x_row.sum(), y_row.sum()
    if dx == 0 or dy == 0:
        return None, None
    tau = float(s / math.sqrt(dx * dy))
    # Leaving request i out removes its row and its column: twice its row sums.
    lx, ly = dx - 2 * x_row, dy - 2 * y_row
    if len(x) < 3 or not ((lx > 0) & (ly > 0)).all():  # one request carries all the spread: no honest interval
        return tau, None
    return tau, (s - 2 * s_row) / np.sqrt(lx * ly)


def _jackknife_se(loo: np.ndarray) -> float:
    n = len(loo)
    return math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))


def kendall_tau_ci(predicted: np.ndarray, actual: np.ndarray, confidence: float = 0.95) -> RankQuality:
    """Tau-b of `predicted` against `actual` and its jackknife interval at `confidence`."""
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(actual, dtype=float)
    n = len(x)
    if n < 2:
        return RankQuality(n, None, None, None)
    tau, loo = _tau_and_leave_one_out(x, y)
    if tau is None or loo is None:
        return RankQuality(n, tau, None, None)
    z = float(norm.ppf(0.5 + confidence / 2))
    se = _jackknife_se(loo)
    return RankQuality(n, tau, max(-1.0, tau - z * se), min(1.0, tau + z * se))


def kendall_tau_difference_ci(
    first: np.ndarray,
    second: np.ndarray,
    actual: np.ndarray,
    confidence: float = 0.95,
    second_actual: np.ndarray | None = None,
) -> RankQuality:
    """Tau-b of `first` minus tau-b of `second` on the same requests, with a paired jackknife interval.

    Paired: both predictors leave out the same request, so the interval is much
    narrower than the two separate intervals suggest when the predictors agree often.
    `second_actual`: the truth of `second` when it has its own (two models' self-predictions,
    each against its own answer lengths); default `actual`.
    """
    y = np.asarray(actual, dtype=float)
    y_b = y if second_actual is None else np.asarray(second_actual, dtype=float)
    n = len(y)
    if n < 2:
        return RankQuality(n, None, None, None)
    tau_a, loo_a = _tau_and_leave_one_out(np.asarray(first, dtype=float), y)
    tau_b, loo_b = _tau_and_leave_one_out(np.asarray(second, dtype=float), y_b)
    if tau_a is None or tau_b is None:
        return RankQuality(n, None, None, None)
    difference = tau_a - tau_b
    if loo_a is None or loo_b is None:
        return RankQuality(n, difference, None, None)
    z = float(norm.ppf(0.5 + confidence / 2))
    se = _jackknife_se(loo_a - loo_b)
    return RankQuality(n, difference, difference - z * se, difference + z * se)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
