"""Prediction-noise models: what a length predictor of a given quality would tell the scheduler.

Specs (CLI ``--predictions``):

- ``oracle``: the true output lengths.
- ``lognormal:tau=0.5`` or ``lognormal:sigma=1.0``: true length × exp(σ·Z),
  median-unbiased; with `tau`, σ is tuned so that Kendall's tau between prediction
  and truth is the target.
- ``replay:PATH`` (``replay:PATH,variant=NAME,k=5,cap=N``): predictions drawn
  from a `predict eval` JSONL, conditioned on the true length: each request takes
  the prediction of an eval record drawn uniformly among the `k` whose actual
  length is closest to its own, and every record tied with the k-th. This keeps
  the predictor's real joint behaviour, including a predictor with no signal at
  all (a ratio model would invent one). Eval records stop at the eval's
  max_tokens, so the workload's outputs are capped at the records' longest (or
  `cap`) first: see `output_cap`.
- ``calibrated:SPEC``: SPEC's predictions mapped through a least-squares fit of
  log(1 + true) on log(1 + predicted), as the gateway's calibrator maps a predictor's
  raw output (`predict.calibration`). The order is SPEC's (Kendall's tau unchanged);
  the scale is shrunk toward the typical length, as an expectation given the
  prediction is. It matters where predictions are added to other quantities
  (`sst`: prompt cost) or summed (`deadline`: the queue's work): a raw log-normal
  prediction of a long-predicted request overstates it by the noise's whole factor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.core.io import read_jsonl
from lengthwise.core.spec import parse_params
from lengthwise.core.stats import kendall_tau


def oracle(output: np.ndarray) -> np.ndarray:
    return np.asarray(output, dtype=float)


def lognormal(output: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    z = np.random.default_rng(seed).standard_normal(np.asarray(output).size)
    return np.asarray(output, dtype=float) * np.exp(np.clip(sigma * z, -700, 700))


def sampled_kendall_tau(predicted: np.ndarray, actual: np.ndarray, sample: int = 4000, seed: int = 0) -> float:
    """Kendall's tau-b on a random sample of at most `sample` pairs of rows (O(n log n) anyway); 0 when undefined."""
    predicted, actual = np.asarray(predicted), np.asarray(actual)
    if predicted.size > sample:
        idx = np.random.default_rng(seed).choice(predicted.size, sample, replace=False)
        predicted, actual = predicted[idx], actual[idx]
    tau = kendall_tau(predicted, actual)
    return 0.0 if math.isnan(tau) else tau


def sigma_for_tau(output: np.ndarray, tau: float, seed: int = 0) -> float:
    """The log-normal σ at which predictions reach Kendall's tau ≈ `tau` on these lengths."""
    best = sampled_kendall_tau(oracle(output), output)
    if not 0 < tau <= best:
        raise ValueError(f"target tau must be in (0, {best:.3f}] for these lengths (ties cap it), got {tau}")
    lo, hi = 0.0, 1.0
    while sampled_kendall_tau(lognormal(output, hi, seed), output) > tau:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            raise ValueError(f"cannot reach tau {tau}")
    for _ in range(30):
        mid = (lo + hi) / 2
        if sampled_kendall_tau(lognormal(output, mid, seed), output) > tau:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def read_eval_pairs(path: Path, variant: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(actual, predicted) output tokens from a `predict eval` JSONL, read defensively.

    Per line: `actual` or `actual_tokens`; the prediction from `calibrated`, else
    `predicted`, else (with `variant`, or the first variant) its `summary.expect`
    or `parsed`. Lines without both numbers are skipped.
    """
    actual, predicted = [], []
    for rec in read_jsonl(path):
        a = _number(rec.get("actual", rec.get("actual_tokens")))
        p = _prediction(rec, variant)
        if a is not None and a > 0 and p is not None:
            actual.append(a)
            predicted.append(p)
    if not actual:
        raise ValueError(f"{path}: no records with an actual length and a prediction")
    return np.asarray(actual), np.asarray(predicted)


def _prediction(rec: Mapping[str, Any], variant: str | None) -> float | None:
    for field in ("calibrated", "predicted"):
        if (v := _number(rec.get(field))) is not None:
            return v
    variants = rec.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        return None
    chosen = variants.get(variant) if variant else next(iter(variants.values()))
    if not isinstance(chosen, Mapping):
        return None
    summary = chosen.get("summary")
    if isinstance(summary, Mapping) and (v := _number(summary.get("expect"))) is not None:
        return v
    return _number(chosen.get("parsed"))


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def replayed(output: np.ndarray, actual: np.ndarray, predicted: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """For each true length, the prediction of a record drawn uniformly among its k nearest in actual length.

    Records tied with the k-th nearest all count: with many records at the eval's
    cap, a fixed k would always pick the same few, and a predictor's replay would
    hang on what it said for them. Token counts are integers, so distances are exact.
    """
    order = np.argsort(actual, kind="stable")
    actual_sorted, pred_sorted = np.asarray(actual, dtype=float)[order], np.asarray(predicted, dtype=float)[order]
    x = np.asarray(output, dtype=float)
    m = actual_sorted.size
    k = max(1, min(k, m))
    # The k nearest lie among the k records either side of x's insertion point.
    window = np.searchsorted(actual_sorted, x)[:, None] + np.arange(-k, k)
    inside = (window >= 0) & (window < m)
    dist = np.where(inside, np.abs(actual_sorted[np.clip(window, 0, m - 1)] - x[:, None]), np.inf)
    kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
    lo = np.searchsorted(actual_sorted, x - kth, side="left")
    hi = np.searchsorted(actual_sorted, x + kth, side="right")
    return pred_sorted[np.random.default_rng(seed).integers(lo, hi)]


def output_cap(spec: str) -> int | None:
    """The output length a workload must be capped at for predictions `spec`, or None.

    A replay only knows lengths up to its records' max_tokens (the longest actual
    length, unless `cap=N`): longer simulated requests would all borrow the capped
    records' predictions while taking longer than any of them, so they are cut to it.
    """
    name, _, args = spec.partition(":")
    if name.strip().lower() == "calibrated":
        return output_cap(args)
    if name.strip().lower() != "replay":
        return None
    path, params = _replay_args(spec)
    cap = int(params["cap"]) if "cap" in params else int(read_eval_pairs(path, params.get("variant"))[0].max())
    if cap < 1:
        raise ValueError(f"predictions {spec!r}: cap must be >= 1, got {cap}")
    return cap


def _replay_args(spec: str) -> tuple[Path, dict[str, Any]]:
    path, _, rest = spec.partition(":")[2].partition(",")
    return Path(path), parse_params(rest, f"predictions {spec!r}")


def calibrated(predicted: np.ndarray, output: np.ndarray) -> np.ndarray:
    """`predicted` through the log-log least-squares fit of the true lengths on it (in-sample)."""
    x, y = np.log1p(np.asarray(predicted, dtype=float)), np.log1p(np.asarray(output, dtype=float))
    if np.ptp(x) == 0:
        return np.full_like(x, np.expm1(y.mean()))
    slope, intercept = np.polyfit(x, y, 1)
    return np.expm1(intercept + slope * x)


def make_predictions(spec: str, output: np.ndarray, seed: int = 0) -> np.ndarray:
    """Predicted lengths for true lengths `output` from a spec (see the module docstring)."""
    name, _, args = spec.partition(":")
    name = name.strip().lower()
    if name == "calibrated":
        return calibrated(make_predictions(args, output, seed), output)
    if name == "oracle":
        return oracle(output)
    if name == "lognormal":
        params = parse_params(args, f"predictions {spec!r}")
        if "sigma" in params:
            return lognormal(output, float(params["sigma"]), seed)
        if "tau" in params:
            return lognormal(output, sigma_for_tau(output, float(params["tau"]), seed), seed)
        raise ValueError("lognormal predictions need tau=... or sigma=...")
    if name == "replay":
        path, params = _replay_args(spec)
        actual, predicted = read_eval_pairs(path, params.get("variant"))
        return replayed(output, actual, predicted, int(params.get("k", 5)), seed)
    raise ValueError(
        f"unknown prediction model {spec!r}: use oracle, lognormal:tau=T, lognormal:sigma=S, replay:PATH "
        "or calibrated:SPEC"
    )

