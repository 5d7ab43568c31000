"""Re-prediction while an answer decodes: its expected length given the tokens it has produced.

A prediction made before the answer starts says how long it is likely to be; once `g`
tokens have streamed and it has not ended, the shorter part of that distribution is ruled
out. What a preemptive scheduler needs is the remaining length E[min(L, cap) | L > g] − g
(shortest *remaining* processing time), which for the heavy-tailed lengths of LLM answers
grows as an answer outlives its prediction.

The distribution is the log-normal the learned predictor fits (`learned.distribution`):
read off a prediction's quantiles where it has them, else centred on its expected length
with an assumed spread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from lengthwise.core.policy.job import Job
from lengthwise.predict.base import Prediction
from lengthwise.predict.learned.distribution import ASSUMED_SIGMA, expected_capped, expected_capped_beyond

_Z = NormalDist().inv_cdf
#: The cap a length distribution assumes for a request that gives none (the engine's context bounds it).
UNCAPPED_TOKENS = 32768


@dataclass(frozen=True)
class LengthDistribution:
    """log1p(L) ~ Normal(mu, sigma), served up to `cap` tokens."""

    mu: float
    sigma: float
    cap: float

    @classmethod
    def of(cls, prediction: Prediction, cap: float) -> LengthDistribution:
        """The distribution behind `prediction` for an answer capped at `cap` tokens: fitted to its
        quantiles strictly inside (1, cap) when it has two or more (those at a bound are censored),
        else with `ASSUMED_SIGMA` and the mean the prediction expects."""
        inside = sorted((_Z(q), math.log1p(v)) for q, v in prediction.quantiles.items()
                        if 0 < q < 1 and 1 < v < cap)
        if len(inside) >= 2:
            zs, ys = zip(*inside, strict=True)
            mz, my = sum(zs) / len(zs), sum(ys) / len(ys)
            spread = sum((z - mz) ** 2 for z in zs)
            sigma = sum((z - mz) * (y - my) for z, y in inside) / spread if spread > 0 else 0.0
            if sigma > 0:
                return cls(my - sigma * mz, sigma, cap)
        return cls(_mu_for_mean(max(prediction.tokens, 1.0), ASSUMED_SIGMA, cap), ASSUMED_SIGMA, cap)

    def expected_total(self, generated: int) -> float:
        """Expected served length of an answer that is still running after `generated` tokens."""
        return expected_capped_beyond(self.mu, self.sigma, self.cap, float(generated))

    def expected_remaining(self, generated: int) -> float:
        return self.expected_total(generated) - generated

    def reprice(self, job: Job, generated: int) -> None:
        """Re-predict a running `job` that has produced `generated` tokens: its expected total length
        given that it has not ended, so that a policy's key for it is its remaining service (SRPT);
        its prompt counts as cached (it is in the engine's prefix cache while it runs)."""
        job.generated_tokens = generated
        job.predicted_tokens = self.expected_total(generated)
        job.cached_tokens = job.prompt_tokens


def _mu_for_mean(mean: float, sigma: float, cap: float) -> float:
    """The mu whose capped expectation is `mean` (bisection: the expectation rises with mu)."""
    if mean >= cap:
        return math.log1p(cap) + 4 * sigma  # nearly all mass at the cap
    low, high = -10.0, math.log1p(cap) + 10 * sigma
    for _ in range(60):
        middle = (low + high) / 2
        if expected_capped(middle, sigma, cap) < mean:
            low = middle
        else:
            high = middle
    return (low + high) / 2
