"""How well a predictor ranks the actual lengths, over its last W completed requests.

A scheduler only needs the order of predictions to be right, so the measure is Kendall's
tau-b between predicted and actual output tokens (1: same order, 0: no information,
-1: reversed), with a jackknife confidence interval. The jackknife of a U-statistic is
consistent and costs one O(W²) pass here: leaving out request i removes row i of the
pairwise sign matrices, so every leave-one-out tau comes from row sums.

Pure: no I/O, no clock. The tau is computed lazily, once per change of the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm


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


def kendall_tau_ci(predicted: np.ndarray, actual: np.ndarray, confidence: float = 0.95) -> RankQuality:
    """Tau-b of `predicted` against `actual` and its jackknife interval at `confidence`."""
    x = np.asarray(predicted, dtype=float)
    y = np.asarray(actual, dtype=float)
    n = len(x)
    if n < 2:
        return RankQuality(n, None, None, None)
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    # Row sums: concordance minus discordance, and the untied pairs of x and of y, per request.
    s_row = (sx * sy).sum(axis=1)
    x_row = np.abs(sx).sum(axis=1)
    y_row = np.abs(sy).sum(axis=1)
    s, dx, dy = s_row.sum(), x_row.sum(), y_row.sum()
    if dx == 0 or dy == 0:
        return RankQuality(n, None, None, None)
    tau = float(s / math.sqrt(dx * dy))
    if n < 3:
        return RankQuality(n, tau, None, None)
    # Leaving request i out removes its row and its column: twice its row sums.
    lx, ly = dx - 2 * x_row, dy - 2 * y_row
    defined = (lx > 0) & (ly > 0)
    if not defined.all():  # one request carries all the spread: no honest interval
        return RankQuality(n, tau, None, None)
    loo = (s - 2 * s_row) / np.sqrt(lx * ly)
    se = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    z = float(norm.ppf(0.5 + confidence / 2))
    return RankQuality(n, tau, max(-1.0, tau - z * se), min(1.0, tau + z * se))


class QualityWindow:
    """The last `size` (predicted, actual) pairs of one predictor, and their rank quality."""

    def __init__(self, size: int = 200, confidence: float = 0.95) -> None:
        if size < 3:
            raise ValueError("a quality window needs at least 3 requests")
        if not 0 < confidence < 1:
            raise ValueError("confidence must be between 0 and 1")
        self.size = size
        self.confidence = confidence
        self._pairs: deque[tuple[float, float]] = deque(maxlen=size)
        self._cached: RankQuality | None = None

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, predicted: float, actual: float) -> None:
        """Record one completed request; non-finite values are ignored (they rank nothing)."""
        if math.isfinite(predicted) and math.isfinite(actual):
            self._pairs.append((predicted, actual))
            self._cached = None

    def pairs(self) -> list[tuple[float, float]]:
        """The window's (predicted, actual) pairs, oldest first: the evidence to persist."""
        return list(self._pairs)

    def extend(self, pairs: Iterable[tuple[float, float]]) -> None:
        """Record many pairs (restored evidence); as with `add`, only the last `size` stay."""
        for predicted, actual in pairs:
            self.add(predicted, actual)

    def quality(self) -> RankQuality:
        """Tau-b and interval of the window, recomputed only after it changed."""
        if self._cached is None:
            pairs = np.array(self._pairs, dtype=float).reshape(-1, 2)
            self._cached = kendall_tau_ci(pairs[:, 0], pairs[:, 1], self.confidence)
        return self._cached


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
