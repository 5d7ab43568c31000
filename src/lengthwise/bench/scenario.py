"""How the requests of a comparison arrive: all at once (a burst), or at a rate.

A burst sends every request at t = 0 (the batch case): each policy then only
decides the order of one queue, and its ratio to FCFS barely moves with how fast
the shared machine happens to run. Arrivals at a rate (gamma gaps, Poisson by
default) at a fraction of the measured capacity show a policy under a live queue,
where a slow spell of the engine changes the queue itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lengthwise.workload.arrivals import gamma_arrivals

Kind = Literal["burst", "poisson"]
KINDS: tuple[str, ...] = ("burst", "poisson")


@dataclass(frozen=True)
class Scenario:
    """`burst`, or `poisson` at `load` × capacity (or at `rate` req/s) with gamma shape `burstiness`."""

    kind: Kind
    load: float = 0.9
    rate: float | None = None
    burstiness: float = 1.0

    @property
    def name(self) -> str:
        """The scenario's folder name and report title: `burst`, `poisson-load0.9`, `gamma0.5-rate2`."""
        if self.kind == "burst":
            return "burst"
        pace = f"rate{self.rate:g}" if self.rate else f"load{self.load:g}"
        shape = "poisson" if self.burstiness == 1 else f"gamma{self.burstiness:g}"
        return f"{shape}-{pace}"

    def rate_rps(self, capacity_rps: float) -> float:
        """Mean arrival rate: inf for a burst."""
        if self.kind == "burst":
            return math.inf
        return self.rate or self.load * capacity_rps

    def arrivals(self, n: int, capacity_rps: float, seed: int) -> np.ndarray:
        return gamma_arrivals(n, self.rate_rps(capacity_rps), self.burstiness, seed)

    def run_seconds(self, n: int, capacity_rps: float) -> float:
        """About how long one run of `n` requests takes: the arrivals' span or the work, whichever is longer.

        A queue left at the last arrival drains at capacity; at loads below 1 it is short,
        so the estimate adds the time of one request.
        """
        work = n / capacity_rps
        rate = self.rate_rps(capacity_rps)
        return work if math.isinf(rate) else max(work, n / rate) + 1 / capacity_rps

    def describe(self, capacity_rps: float) -> dict[str, object]:
        """What the report states about the arrivals."""
        if self.kind == "burst":
            return {"arrivals": "burst: every request at t = 0"}
        rate = self.rate_rps(capacity_rps)
        shape = "Poisson" if self.burstiness == 1 else f"gamma gaps of shape {self.burstiness:g}"
        return {
            "arrivals": f"{shape} at {rate:.3f} req/s",
            "rate_rps": round(rate, 4),
            "load": round(rate / capacity_rps, 3),
            "burstiness": self.burstiness,
        }
