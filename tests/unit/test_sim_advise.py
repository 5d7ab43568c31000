"""`lengthwise sim advise`: the pick rule on known numbers, and the command end to end on a small CSV trace."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lengthwise.cli import app
from lengthwise.core.policy import make_policy
from lengthwise.sim.advise import CANDIDATES, CLAIRVOYANT, FAIRNESS, FCFS, Advice, AtLoad, serve_command
from lengthwise.sim.experiment import Arm, ArmResult

DATA = Path(__file__).parents[1] / "data"
runner = CliRunner()


def _metrics(mean: float, tail: float = 1.0) -> dict[str, float]:
    """Mean E2E `mean` (s); every fairness column `tail` × FCFS's made-up values."""
    fcfs_fairness = {"max_wait_ms": 20_000.0, "p99_slowdown": 5.0, "p99_e2el_longest10_ms": 60_000.0,
                     "p99_e2el_longest10_prompt_ms": 50_000.0}  # fmt: skip
    return {"mean_e2el_ms": mean * 1000, **{k: v * tail for k, v in fcfs_fairness.items()}}


def _advice(per_load: list[dict[str, dict[str, float]]]) -> Advice:
    scenarios = [
        AtLoad(1 + i / 4, 1.0, 0.8, [ArmResult(Arm(spec), None, m) for spec, m in metrics.items()])  # type: ignore[arg-type]
        for i, metrics in enumerate(per_load)
    ]
    candidates = [s for s in per_load[0] if s not in (FCFS, CLAIRVOYANT)]
    return Advice(scenarios, candidates, 10.0, "oracle")


def test_the_pick_is_the_best_fair_candidate_and_fcfs_when_none_gains() -> None:
    load = {FCFS: _metrics(10), "sjf": _metrics(6, tail=3.0), "sst": _metrics(8, tail=1.4),
            "sst+deadline": _metrics(9), CLAIRVOYANT: _metrics(5, tail=4.0)}  # fmt: skip
    advice = _advice([load, load])
    assert not advice.fair("sjf") and advice.fair("sst")
    assert advice.gain("sst") == pytest.approx(0.2)
    assert advice.recommended == "sst"  # sjf gains more, but starves the long requests
    harmful = dict(load, sst=_metrics(11, tail=1.0))
    assert _advice([load, harmful]).recommended == "sst+deadline"  # sst is slower than FCFS at the second load
    flat = {FCFS: _metrics(10), "sst": _metrics(9.95), CLAIRVOYANT: _metrics(5)}
    assert _advice([flat]).recommended == FCFS


def test_short_waits_are_not_a_fairness_cost() -> None:
    fcfs, other = _metrics(10), _metrics(9)
    fcfs["max_wait_ms"], other["max_wait_ms"] = 10.0, 400.0  # 0.01 s against 0.4 s: both under a second
    (scenario,) = _advice([{FCFS: fcfs, "sst": other, CLAIRVOYANT: other}]).scenarios
    assert scenario.ratio("sst", "max_wait_ms", FAIRNESS[0][2]) == 1.0


def test_the_candidates_exist_and_the_serve_line_keeps_the_bound() -> None:
    for spec in CANDIDATES:
        make_policy(spec)
    line = serve_command("sst+deadline", 16)
    assert line.startswith("lengthwise serve ") and "--mode both --max-inflight 16 --policy sst+deadline" in line
    assert "lengthwise serve" not in serve_command(FCFS, 16)


def test_sim_advise_writes_a_report_for_a_csv_trace(tmp_path: Path) -> None:
    out = tmp_path / "advice"
    args = ["sim", "advise", "--workload", f"trace:{DATA / 'azure_style_trace.csv'}", "--n", "200", "--seats", "4",
            "--load", "0.9", "--policy", "sst", "--policy", "sst+deadline", "--out", str(out)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    data = json.loads((out / "advice.json").read_text())
    assert [round(s["factor"], 2) for s in data["loads"]] == [1.0, 1.25, 1.5]
    assert [round(s["load"], 2) for s in data["loads"]] == pytest.approx([0.9, 1.12, 1.35], abs=0.01)
    assert set(data["loads"][0]["metrics"]) == {FCFS, "sst", "sst+deadline", CLAIRVOYANT}
    assert data["recommended"] in (FCFS, "sst", "sst+deadline")
    pick = data["recommended"]
    assert ("Recommendation: FCFS" if pick == FCFS else f"Recommendation: `{pick}`") in report
    assert data["serve"] in report and "--policy sst --policy sst+deadline" in report
    assert (out / "advise.png").stat().st_size > 10_000 and (out / "e2e_cdf.png").stat().st_size > 10_000
