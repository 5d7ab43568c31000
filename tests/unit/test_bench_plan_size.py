"""Scenarios (burst, arrivals at a load) and fitting the prompt count to a time budget."""

from __future__ import annotations

import pytest

from lengthwise.bench.budget import MIN_PROMPTS, RUN_OVERHEAD_S, estimate, fit_prompts
from lengthwise.bench.scenario import Scenario


def test_scenario_names_arrivals_and_run_times() -> None:
    burst, poisson = Scenario("burst"), Scenario("poisson", load=0.5)
    assert (burst.name, poisson.name) == ("burst", "poisson-load0.5")
    assert Scenario("poisson", rate=2.0, burstiness=0.5).name == "gamma0.5-rate2"
    assert list(burst.arrivals(4, capacity_rps=1.0, seed=0)) == [0.0] * 4
    arrivals = poisson.arrivals(200, capacity_rps=2.0, seed=0)  # 1 req/s
    assert arrivals[0] == 0.0 and 150 < arrivals[-1] < 250
    assert burst.run_seconds(10, capacity_rps=2.0) == 5.0
    assert poisson.run_seconds(10, capacity_rps=2.0) == 10.0 + 0.5  # the arrivals' span, then one request
    assert burst.describe(1.0) == {"arrivals": "burst: every request at t = 0"}
    assert poisson.describe(2.0)["load"] == 0.5


def test_the_budget_picks_the_most_prompts_that_fit() -> None:
    scenarios = [Scenario("burst"), Scenario("poisson", load=0.9)]
    # 0.1 req/s: each prompt costs 10 s to calibrate, 10 s per burst run and ~11 s per Poisson run.
    plan = fit_prompts(15 * 60, 0.1, scenarios, runs_per_scenario=3, available=60, calibrated=12)
    assert plan.fits and MIN_PROMPTS <= plan.prompts < 60
    assert plan.total_s <= 15 * 60
    assert estimate(plan.prompts + 1, 0.1, scenarios, 3, 12).total_s > 15 * 60 - 20
    assert plan.calibration_s == pytest.approx((plan.prompts - 12) * 10)
    assert plan.scenario_s["burst"] == pytest.approx(3 * (plan.prompts * 10 + RUN_OVERHEAD_S))
    assert "prompts" in plan.text(3) and "min in all" in plan.text(3)


def test_a_budget_too_small_keeps_the_fewest_prompts_and_says_so() -> None:
    plan = fit_prompts(60, 0.01, [Scenario("burst")], runs_per_scenario=3, available=60, calibrated=0)
    assert plan.prompts == MIN_PROMPTS and not plan.fits and "over the budget" in plan.text(3)
    fast = fit_prompts(600, 1000.0, [Scenario("burst")], runs_per_scenario=3, available=60, calibrated=0)
    assert fast.prompts == 60 and fast.fits
