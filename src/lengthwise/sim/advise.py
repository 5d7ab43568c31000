"""What lengthwise would do for a given traffic: candidate policies at its load and in bursts, and a pick.

Each candidate runs on the same requests at the trace's own timing (or `base_load` × the
engine's FCFS capacity) and with arrivals compressed ×1.25 and ×1.5 (the same pattern,
faster: a busier hour). Candidates see predictions of a given quality (by default a
predictor with Kendall's tau 0.5, calibrated as the gateway calibrates it); the
clairvoyant service-time order (`sst@oracle`, true lengths) is shown as the reference
and never recommended.

The pick: among candidates that keep every fairness column (max wait, p99 slowdown, p99
E2E of the longest decile by output and by prompt) within `FAIR_BOUND` × FCFS's at every
load, and are nowhere more than `HARM_TOLERANCE` slower than FCFS on mean E2E, the one
with the lowest geometric-mean ratio of mean E2E to FCFS's; FCFS when none gains at
least `MIN_GAIN`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lengthwise.core.policy import DEFAULT_POLICY

if TYPE_CHECKING:  # numpy and the simulator load when `advise` runs, not with the CLI
    from lengthwise.sim.cost import CostModel
    from lengthwise.sim.engine import EngineConfig
    from lengthwise.sim.experiment import Arm, ArmResult
    from lengthwise.sim.workload import Workload

FCFS = "fcfs"
CLAIRVOYANT = "sst@oracle"
#: sjf-style and sst variants of the policy registry: output-only SJF, service time unbounded,
#: and service time with the FCFS-relative wait bound at k = 1, the default's 1.5, and 2.
CANDIDATES = ("sjf", "sst", "sst+deadline:k=1", DEFAULT_POLICY, "sst+deadline:k=2")
#: A length predictor with Kendall's tau 0.5 whose output the gateway calibrates (docs/SIMULATOR.md).
PREDICTIONS = "calibrated:lognormal:tau=0.5"
FACTORS = (1.0, 1.25, 1.5)
FAIR_BOUND = 1.5
MIN_GAIN = 0.01
HARM_TOLERANCE = 0.01
#: Waits shorter than this are compared as this long: no one notices them, and a ratio of tiny waits is noise.
MIN_WAIT_S = 1.0
#: (metrics key, column title, floor in the key's unit) of the fairness columns.
FAIRNESS: tuple[tuple[str, str, float], ...] = (
    ("max_wait_ms", "max wait", MIN_WAIT_S * 1000),
    ("p99_slowdown", "p99 slowdown", 0.0),
    ("p99_e2el_longest10_ms", "p99 E2E, longest 10% by output", 0.0),
    ("p99_e2el_longest10_prompt_ms", "p99 E2E, longest 10% by prompt", 0.0),
)


@dataclass(frozen=True)
class AtLoad:
    """One load: the arrivals ×`factor` compressed, their mean rate and that rate ÷ FCFS capacity."""

    factor: float
    rate: float
    load: float
    results: Sequence[ArmResult]

    def metrics(self, spec: str) -> dict[str, float]:
        return next(r.metrics for r in self.results if r.arm.spec == spec)

    def ratio(self, spec: str, key: str = "mean_e2el_ms", floor: float = 0.0) -> float:
        """`spec`'s `key` ÷ FCFS's, both raised to `floor` first."""
        own, fcfs = max(self.metrics(spec)[key], floor), max(self.metrics(FCFS)[key], floor)
        return own / fcfs if fcfs > 0 else (1.0 if own == 0 else math.inf)

    def worst_fairness(self, spec: str) -> float:
        return max(self.ratio(spec, key, floor) for key, _, floor in FAIRNESS)


@dataclass(frozen=True)
class Advice:
    scenarios: Sequence[AtLoad]
    candidates: Sequence[str]
    capacity: float
    predictions: str

    def fair(self, spec: str) -> bool:
        return all(s.worst_fairness(spec) <= FAIR_BOUND for s in self.scenarios)

    def gain(self, spec: str) -> float:
        """1 − the geometric mean over loads of mean E2E ÷ FCFS's."""
        return 1 - statistics.geometric_mean(s.ratio(spec) for s in self.scenarios)

    def harmless(self, spec: str) -> bool:
        return all(s.ratio(spec) <= 1 + HARM_TOLERANCE for s in self.scenarios)

    @property
    def recommended(self) -> str:
        eligible = [c for c in self.candidates if self.fair(c) and self.harmless(c) and self.gain(c) >= MIN_GAIN]
        return max(eligible, key=self.gain, default=FCFS)


def compressed(workload: Workload, factor: float) -> Workload:
    """The same arrival pattern `factor` times faster."""
    return workload.with_arrivals((workload.arrival - workload.arrival[0]) / factor)


def advise(
    workload: Workload,
    config: EngineConfig,
    cost: CostModel,
    *,
    candidates: Sequence[str] = CANDIDATES,
    predictions: str = PREDICTIONS,
    factors: Sequence[float] = FACTORS,
    base_load: float | None = None,
    seed: int = 0,
    on_arm: Callable[[float, Arm], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Advice:
    """Run FCFS, each candidate and the clairvoyant order at each load factor (the same requests throughout).

    The base timing is the workload's own, or rescaled to `base_load` × FCFS capacity when given.
    `on_arm(factor, arm)` announces each run; `progress(done)` counts its simulated requests.
    """
    from lengthwise.sim.experiment import Arm, run_arms
    from lengthwise.sim.load import capacity
    from lengthwise.workload.arrivals import mean_rate, rescale_to_rate

    if not factors or min(factors) <= 0:
        raise ValueError(f"load factors must be positive, got {list(factors)}")
    cap = capacity(workload, config, cost)
    if base_load is not None:
        if not base_load > 0:
            raise ValueError(f"base load must be positive, got {base_load}")
        workload = workload.with_arrivals(rescale_to_rate(workload.arrival, base_load * cap))
    if len(workload) < 2 or mean_rate(workload.arrival) == math.inf:
        raise ValueError("the workload needs at least two requests at distinct times to have a load")
    arms = [Arm(FCFS), *(Arm(c) for c in candidates if c != FCFS), Arm(CLAIRVOYANT)]
    scenarios = []
    for factor in factors:
        w = compressed(workload, factor)
        results = run_arms(
            w, arms, config, cost, predictions, seed=seed, progress=progress,
            on_arm=None if on_arm is None else lambda arm, f=factor: on_arm(f, arm),
        )  # fmt: skip
        rate = mean_rate(w.arrival)
        scenarios.append(AtLoad(factor, rate, rate / cap, results))
    return Advice(scenarios, [a.spec for a in arms[1:-1]], cap, predictions)


def serve_command(policy: str, seats: int) -> str:
    """The gateway command line that runs `policy` in front of a vLLM engine with `seats` seats.

    The deadline bound and aging act where the gateway holds the queue, so the gateway admits
    (`--mode both`, as many in flight as the engine has seats) and sends the priority too.
    """
    if policy == FCFS:
        return "none: keep serving straight from the engine (first come, first served)"
    return (
        f"lengthwise serve --backend http://ENGINE:8000 --engine vllm --mode both --max-inflight {seats} "
        f"--policy {policy}"
    )
