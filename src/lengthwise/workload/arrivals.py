"""Arrival processes: Poisson and gamma (bursty) arrivals, trace tiling and time scaling."""

from __future__ import annotations

import numpy as np


def gamma_arrivals(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Arrival times (s, first at 0) of `n` requests at `rate` req/s.

    Gaps are gamma-distributed with shape `burstiness` and mean 1/rate, as in
    `vllm bench serve --burstiness`: 1 is Poisson, below 1 burstier, above 1 more
    regular. `rate` = inf sends everything at once.
    """
    if n <= 0:
        return np.zeros(0)
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if np.isinf(rate):
        return np.zeros(n)
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def rescale_to_rate(arrivals: np.ndarray, rate: float) -> np.ndarray:
    """The same arrival pattern (bursts kept) stretched or squeezed to a mean rate (req/s), from 0."""
    a = np.asarray(arrivals, dtype=float)
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    offsets = a - a[0] if a.size else a
    if a.size < 2 or offsets[-1] <= 0:
        return offsets
    return offsets * ((a.size - 1) / rate / offsets[-1])


def tile_arrivals(arrivals: np.ndarray, n: int) -> np.ndarray:
    """`n` arrivals made of back-to-back copies of a trace, each copy one mean gap after the last."""
    a = np.asarray(arrivals, dtype=float)
    if a.size == 0:
        raise ValueError("cannot tile an empty trace")
    a = a - a[0]
    period = a[-1] + (a[-1] / (a.size - 1) if a.size > 1 else 1.0)
    copies = -(-n // a.size)
    return (a[None, :] + period * np.arange(copies)[:, None]).ravel()[:n]


def mean_rate(arrivals: np.ndarray) -> float:
    """Requests per second over the span of the arrivals."""
    a = np.asarray(arrivals, dtype=float)
    span = a[-1] - a[0] if a.size > 1 else 0.0
    return (a.size - 1) / span if span > 0 else float("inf")
