"""`lengthwise sim advise`: which policy for this traffic, what it gains, what it costs, how to run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lengthwise.sim.advise import CANDIDATES, CLAIRVOYANT, FCFS, PREDICTIONS
from lengthwise.sim.options import Scenario, clear_errors, console, progress_bar, with_scenario


@with_scenario(predictions=PREDICTIONS)
def advise(
    *,
    scenario: Scenario,
    policy: Annotated[
        list[str] | None,
        typer.Option(help=f"Candidate policy spec (repeatable); default: {', '.join(CANDIDATES)}. {FCFS} and the "
                          f"clairvoyant {CLAIRVOYANT} always run."),
    ] = None,
    load: Annotated[
        float | None,
        typer.Option(help="Base load as a fraction of the engine's FCFS capacity; default: the trace's own timing."),
    ] = None,
    bursts: Annotated[str, typer.Option(help="Arrival compression factors tried besides the base load.")] = "1.25,1.5",
    out: Annotated[Path, typer.Option(help="Folder for report.md, advice.json and the plots.")] = Path("advise"),
) -> None:
    """Run the candidate policies on a workload at its own load and in bursts; write a report that
    recommends one (the best that keeps every fairness column within 1.5× FCFS's) and its `lengthwise serve` line."""
    from lengthwise.sim.advice_report import write_report
    from lengthwise.sim.advise import advise as run_advice
    from lengthwise.sim.experiment import Arm, loads

    with clear_errors():
        candidates = policy or list(CANDIDATES)
        for spec in candidates:
            Arm(spec).validate()
        factors = [1.0, *loads(bursts)]
        config = scenario.engine()
        w, title = scenario.build_workload()
        arms = len(candidates) + 2
        with progress_bar(len(factors) * arms * len(w)) as (bar, task):
            started: list[int] = []

            def on_arm(factor: float, arm: Arm) -> None:
                started.append(len(w))
                bar.update(task, completed=(len(started) - 1) * len(w), description=f"×{factor:g} {arm.spec}")

            advice = run_advice(
                w, config, scenario.cost(), candidates=candidates, predictions=scenario.predictions, factors=factors,
                base_load=load, seed=scenario.seed, on_arm=on_arm,
                progress=lambda done: bar.update(task, completed=(len(started) - 1) * len(w) + done),
            )  # fmt: skip
        command = _command(scenario, candidates if policy else None, load, bursts, out)
        report = write_report(advice, out, title=title, command=command, seats=scenario.max_num_seqs)
        console.print(report.read_text().split("## Candidates")[0].strip())
        console.print(f"\nreport: {report}")


def _command(scenario: Scenario, policies: list[str] | None, load: float | None, bursts: str, out: Path) -> str:
    """The command line that reproduces this report (the options that matter to it)."""
    parts = ["lengthwise sim advise", f"--workload {scenario.workload}", f"--seats {scenario.max_num_seqs}"]
    parts += [f"--n {scenario.n}"] if scenario.n is not None else []
    parts += [f"--profile {scenario.profile}"] if scenario.profile is not None else []
    parts += [f"--load {load:g}"] if load is not None else []
    parts += [f"--policy {p}" for p in policies or []]
    parts += [f"--predictions {scenario.predictions}"] if scenario.predictions != PREDICTIONS else []
    parts += [f"--bursts {bursts}", f"--out {out}"]
    return " ".join(parts)
