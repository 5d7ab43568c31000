"""Each arm's latency relative to FCFS, per round and with a bootstrap 95% confidence interval.

A ratio pairs the arm with the FCFS run of the same round, prompt by prompt (a
prompt counts if it completed in every run of both, so that every round compares
the same prompts). The estimate is the metric's mean over rounds for the arm ÷ the
same for FCFS. The interval resamples what is random in it: the prompts (one draw
of prompt ids, applied to both arms and every round) and the rounds (the machine's
speed from run to run), both with replacement, and takes the 2.5th and 97.5th
percentiles of the replicates. scipy's `bootstrap` resamples one level only; this
two-level draw is a few lines of numpy. Throughput is one number per run, so its
interval resamples rounds only, and a single round has none. With few rounds the
round level of the interval is coarse: read it with the per-round values beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from lengthwise.core.records import RequestRecord

REPLICATES = 2000
#: Resampled values held at once (replicates × rounds × prompts), to bound memory.
_CHUNK_VALUES = 2_000_000

Statistic = Callable[..., np.ndarray]


#: (name, per-request field, statistic over one run's prompts) of the paired ratios.
PER_REQUEST: tuple[tuple[str, str, Statistic], ...] = (
    ("mean E2E", "e2el", np.mean),
    ("median E2E", "e2el", np.median),
    ("p99 E2E", "e2el", partial(np.percentile, q=99)),
    ("mean TTFT", "ttft", np.mean),
)
THROUGHPUT = "output tok/s"
METRICS: tuple[str, ...] = (*(name for name, _, _ in PER_REQUEST), THROUGHPUT)


@dataclass(frozen=True)
class Ratio:
    per_round: tuple[float, ...]
    estimate: float
    low: float = math.nan
    high: float = math.nan

    def text(self) -> str:
        """`0.83× [0.76, 0.91]`, or `0.83×` without an interval."""
        interval = "" if math.isnan(self.low) else f" [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.estimate:.2f}×{interval}"


@dataclass(frozen=True)
class PairedRounds:
    """One arm and FCFS over the rounds both ran: their records and output throughputs, round by round."""

    arm: Sequence[Sequence[RequestRecord]]
    base: Sequence[Sequence[RequestRecord]]
    arm_throughput: Sequence[float]
    base_throughput: Sequence[float]


def ratios(rounds: PairedRounds, replicates: int = REPLICATES, seed: int = 0) -> dict[str, Ratio]:
    """Every metric of `METRICS` as arm ÷ FCFS, with per-round values and a 95% interval."""
    ids = sorted({r.id for run in (*rounds.arm, *rounds.base) for r in run})
    out = {}
    for name, field, stat in PER_REQUEST:
        arm, base = _matrix(rounds.arm, ids, field), _matrix(rounds.base, ids, field)
        complete = ~np.isnan(arm).any(axis=0) & ~np.isnan(base).any(axis=0)
        out[name] = _paired_ratio(arm[:, complete], base[:, complete], stat, replicates, seed)
    out[THROUGHPUT] = _run_ratio(np.asarray(rounds.arm_throughput), np.asarray(rounds.base_throughput), replicates, seed)
    return out


def _matrix(runs: Sequence[Sequence[RequestRecord]], ids: Sequence[str], field: str) -> np.ndarray:
    """rounds × prompts of one field (e2el, ttft), NaN where the request failed or is missing."""
    column = {name: i for i, name in enumerate(ids)}
    out = np.full((len(runs), len(ids)), np.nan)
    for r, run in enumerate(runs):
        for rec in run:
            if rec.ok:
                out[r, column[rec.id]] = getattr(rec, field)
    return out


def _ratio_of_means(arm: np.ndarray, base: np.ndarray, stat: Statistic) -> np.ndarray:
    """Over the last two axes (rounds, prompts): mean over rounds of `stat` over prompts, arm ÷ base."""
    return np.mean(stat(arm, axis=-1), axis=-1) / np.mean(stat(base, axis=-1), axis=-1)


def _paired_ratio(arm: np.ndarray, base: np.ndarray, stat: Statistic, replicates: int, seed: int) -> Ratio:
    n_rounds, n_prompts = arm.shape
    if n_prompts == 0:
        return Ratio((math.nan,) * n_rounds, math.nan)
    rng = np.random.default_rng(seed)
    per_round = tuple(float(_ratio_of_means(arm[r : r + 1], base[r : r + 1], stat)) for r in range(n_rounds))
    estimate = float(_ratio_of_means(arm, base, stat))
    chunk = max(1, _CHUNK_VALUES // arm.size)
    draws = []
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        prompts = rng.integers(0, n_prompts, (size, 1, n_prompts))
        rounds = rng.integers(0, n_rounds, (size, n_rounds, 1))
        draws.append(_ratio_of_means(arm[rounds, prompts], base[rounds, prompts], stat))
    return Ratio(per_round, estimate, *_interval(np.concatenate(draws)))


def _run_ratio(arm: np.ndarray, base: np.ndarray, replicates: int, seed: int) -> Ratio:
    per_round = tuple(float(a / b) for a, b in zip(arm, base, strict=True))
    estimate = float(arm.mean() / base.mean())
    if arm.size < 2:
        return Ratio(per_round, estimate)
    rounds = np.random.default_rng(seed).integers(0, arm.size, (replicates, arm.size))
    return Ratio(per_round, estimate, *_interval(arm[rounds].mean(axis=1) / base[rounds].mean(axis=1)))


def _interval(draws: np.ndarray) -> tuple[float, float]:
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return math.nan, math.nan
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)
