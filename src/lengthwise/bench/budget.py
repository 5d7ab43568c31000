"""Sizing a comparison to a time budget from the engine's measured speed.

The same command may meet an engine that generates 7 output tokens a second or
16: a fixed prompt count makes the first take twice as long. After a small
calibration burst has measured the capacity (requests per second at saturation
on these prompts), `fit_prompts` picks the largest prompt count whose remaining
calibration and planned runs fit in the time left. The run times are estimates
(`Scenario.run_seconds`, plus a fixed start-up cost per run), printed as a plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from lengthwise.bench.scenario import Scenario

#: Prompts of the first calibration burst when sizing to a budget.
PROBE_PROMPTS = 12
#: Fewer prompts than this compare nothing; the plan keeps them even past the budget.
MIN_PROMPTS = 6
#: Seconds around each run besides its requests: a gateway's start, waiting for the engine to idle.
RUN_OVERHEAD_S = 15.0
#: Seconds kept for the report and plots at the end.
REPORT_RESERVE_S = 20.0


@dataclass(frozen=True)
class Plan:
    prompts: int
    #: Estimated seconds: calibrating the prompts not yet calibrated, then each scenario's runs.
    calibration_s: float
    scenario_s: dict[str, float]
    fits: bool

    @property
    def total_s(self) -> float:
        return self.calibration_s + sum(self.scenario_s.values())

    def text(self, runs_per_scenario: int) -> str:
        each = ", ".join(f"{name}: {runs_per_scenario} runs, {s / 60:.1f} min" for name, s in self.scenario_s.items())
        return (
            f"{self.prompts} prompts; calibrating the rest {self.calibration_s / 60:.1f} min, {each}; "
            f"about {self.total_s / 60:.1f} min in all" + ("" if self.fits else " (over the budget: the fewest prompts worth comparing)")
        )


def estimate(n: int, capacity_rps: float, scenarios: Sequence[Scenario], runs_per_scenario: int, calibrated: int) -> Plan:
    calibration_s = max(0, n - calibrated) / capacity_rps
    scenario_s = {s.name: runs_per_scenario * (s.run_seconds(n, capacity_rps) + RUN_OVERHEAD_S) for s in scenarios}
    return Plan(n, calibration_s, scenario_s, fits=True)


def fit_prompts(
    budget_s: float,
    capacity_rps: float,
    scenarios: Sequence[Scenario],
    runs_per_scenario: int,
    available: int,
    calibrated: int,
) -> Plan:
    """The plan with the most prompts (at most `available`) that fits in `budget_s`."""
    room = budget_s - REPORT_RESERVE_S
    smallest = min(MIN_PROMPTS, available)
    best = estimate(smallest, capacity_rps, scenarios, runs_per_scenario, calibrated)
    if best.total_s > room:
        return replace(best, fits=False)
    for n in range(smallest + 1, available + 1):
        plan = estimate(n, capacity_rps, scenarios, runs_per_scenario, calibrated)
        if plan.total_s > room:
            break
        best = plan
    return best
