"""What a benchmark run sends and when: prompts paired with arrival times.

A plan is built once from a seed and replayed unchanged by every policy in a
comparison, so that FCFS, LLM-guided and oracle see the same prompts at the same
instants and differ only in how they are scheduled.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a plan: `arrival_s` is seconds after the run's start."""

    id: str
    prompt: str
    arrival_s: float
    max_tokens: int
    #: Sent as vLLM's `priority` field when set (lower is served first); the oracle
    #: arm sets it from actual lengths, the other arms leave it to the gateway.
    priority: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def poisson_gamma_arrivals(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Arrival offsets (s) of `n` requests at `rate` req/s, first at 0.

    Inter-arrival gaps are gamma-distributed with shape `burstiness` and mean
    1/rate, as in `vllm bench serve`: 1.0 is Poisson, below 1 burstier, above 1
    more regular. `rate` = inf sends everything at once.
    """
    if n <= 0:
        return np.zeros(0)
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, got {burstiness}")
    if np.isinf(rate):
        return np.zeros(n)
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def trace_arrivals(path: Path, n: int, rate: float | None = None) -> np.ndarray:
    """The first `n` arrival offsets of a trace CSV with an `arrived_at` column (s).

    With `rate`, the trace's timing is rescaled so its mean rate is `rate` while its
    burst pattern is kept.
    """
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "arrived_at" not in reader.fieldnames:
            raise ValueError(f"{path}: a trace needs an 'arrived_at' column, found {reader.fieldnames}")
        times = [float(row["arrived_at"]) for _, row in zip(range(n), reader, strict=False)]
    if len(times) < n:
        raise ValueError(f"{path}: only {len(times)} arrivals, {n} requested")
    offsets = np.asarray(times) - times[0]
    if rate is not None and n > 1 and offsets[-1] > 0:
        offsets *= (n - 1) / rate / offsets[-1]
    return offsets


def build_plan(prompts: Sequence[str], arrivals: Sequence[float], max_tokens: int) -> list[PlannedRequest]:
    """Pair prompts with arrival offsets; ids are stable (`r0000`, ...) across arms."""
    if len(prompts) != len(arrivals):
        raise ValueError(f"{len(prompts)} prompts but {len(arrivals)} arrival times")
    return [
        PlannedRequest(id=f"r{i:04d}", prompt=p, arrival_s=float(t), max_tokens=max_tokens)
        for i, (p, t) in enumerate(zip(prompts, arrivals, strict=True))
    ]


def with_priorities(plan: Sequence[PlannedRequest], priorities: dict[str, int]) -> list[PlannedRequest]:
    """The same plan with vLLM priorities set per request id (missing ids keep none)."""
    return [replace(r, priority=priorities.get(r.id, r.priority)) for r in plan]
