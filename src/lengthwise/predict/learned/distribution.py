"""A predicted length distribution: a log-normal whose spread is fit to censored labels.

Why a distribution and not a point: a scheduler that orders by *expected service
time* must know how long an answer is likely to run under its `max_tokens`, and
answers of one prompt vary a lot. The model is log1p(L) ~ Normal(mu, sigma), with
mu = a + b * score for any ranker score. Labels at the cap only say L >= cap, so the
fit is censored maximum likelihood (a Tobit model); quantiles and the expectation
are those of the served length min(L, cap), which is what a request occupies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm

_STANDARD_NORMAL = NormalDist()
#: Spread (log space) assumed where none was measured: wide, a factor of e either way.
ASSUMED_SIGMA = 1.0


def expected_capped(log_score: float, sigma: float, cap: float) -> float:
    """E[min(L, cap)] for log1p(L) ~ Normal(log_score, sigma): the answer's expected length under its cap.

    Clipping the point prediction at `cap` instead would tie every prompt predicted
    above it, and with a small max_tokens that is all of them: the order SJF needs
    is lost. This expectation stays below the cap and rises strictly with the score.
    """
    x_cap = cap + 1.0  # in X = L + 1, which is log-normal
    if sigma <= 0:
        return min(math.expm1(log_score), cap)
    z = (math.log(x_cap) - log_score) / sigma
    below = math.exp(log_score + sigma * sigma / 2) * _STANDARD_NORMAL.cdf(z - sigma)
    return below + x_cap * (1.0 - _STANDARD_NORMAL.cdf(z)) - 1.0


def expected_capped_beyond(log_score: float, sigma: float, cap: float, seen: float) -> float:
    """E[min(L, cap) | L > seen] for log1p(L) ~ Normal(log_score, sigma): the expected length of an
    answer still running after `seen` tokens (re-prediction while it decodes; `seen` = 0 is
    `expected_capped`). Past the cap, or where the tail has no mass left, it is the cap or `seen`."""
    if seen >= cap:
        return cap
    if sigma <= 0:
        return max(min(math.expm1(log_score), cap), seen)
    x_seen, x_cap = seen + 1.0, cap + 1.0  # in X = L + 1, which is log-normal
    z_seen = (math.log(x_seen) - log_score) / sigma
    z_cap = (math.log(x_cap) - log_score) / sigma
    beyond = 1.0 - _STANDARD_NORMAL.cdf(z_seen)
    if beyond < 1e-12:  # the answer outlived its whole predicted distribution: it ends soon, at the latest the cap
        return seen
    between = math.exp(log_score + sigma * sigma / 2) * (_STANDARD_NORMAL.cdf(z_cap - sigma)
                                                         - _STANDARD_NORMAL.cdf(z_seen - sigma))
    return min(max((between + x_cap * (1.0 - _STANDARD_NORMAL.cdf(z_cap))) / beyond - 1.0, seen), cap)


def capped_quantiles(log_score: float, sigma: float, cap: float, levels: Iterable[float]) -> dict[float, float]:
    """Quantiles of min(L, cap), at least 1 token, for log1p(L) ~ Normal(log_score, sigma)."""
    return {
        q: min(max(math.expm1(log_score + _STANDARD_NORMAL.inv_cdf(q) * sigma), 1.0), cap) for q in levels
    }


@dataclass(frozen=True)
class Calibration:
    """Score → log-length distribution: mu = a + b * score, spread sigma (log1p space)."""

    a: float
    b: float
    sigma: float

    def mu(self, scores: np.ndarray) -> np.ndarray:
        return self.a + self.b * np.asarray(scores, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "sigma": self.sigma}

    @classmethod
    def fit(cls, scores: np.ndarray, lengths: np.ndarray, capped: np.ndarray) -> Calibration:
        """Censored (Tobit) maximum likelihood: a capped label contributes P(L >= its length)."""
        s = np.asarray(scores, dtype=np.float64)
        y = np.log1p(np.asarray(lengths, dtype=np.float64))
        capped = np.asarray(capped, dtype=bool)
        center, spread = float(s.mean()), float(s.std()) or 1.0
        z = (s - center) / spread  # fit on a standardized score, then convert back

        def loss(params: np.ndarray) -> float:
            a, b, log_sigma = params
            sigma = math.exp(log_sigma)
            r = (y - a - b * z) / sigma
            return -float(np.sum(norm.logpdf(r[~capped]) - log_sigma) + np.sum(norm.logsf(r[capped])))

        start = np.array([float(y.mean()), 0.0, math.log(float(y.std()) or 1.0)])
        a, b, log_sigma = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9,
                                                                               "maxiter": 4000}).x
        return cls(float(a - b * center / spread), float(b / spread), math.exp(log_sigma))
