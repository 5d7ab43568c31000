"""FCFS vs LLM-guided vs oracle on one engine: the same prompts, the same arrival times.

A calibration pass first sends prompts at once straight to the engine: its
makespan measures the engine's capacity on these prompts (so the load can be set
to a fraction of it, and the prompt count to a time budget) and its outputs, at
temperature 0, are the actual lengths the oracle schedules by. Then, for each
scenario (a burst, arrivals at a load), the arms run in interleaved rounds whose
order turns from round to round, so that a slow spell of the shared machine does
not fall on one arm only; the engine's own speed is read around every run.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shlex
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from lengthwise.bench.budget import PROBE_PROMPTS, estimate, fit_prompts
from lengthwise.bench.loadgen import Target, replay
from lengthwise.bench.plan import PlannedRequest, build_plan, with_priorities
from lengthwise.bench.runfile import BenchRun, load_run, save_run
from lengthwise.bench.scenario import Scenario
from lengthwise.bench.services import (
    engine_counters,
    free_port,
    gateway_command,
    gateway_counters,
    running_server,
    wait_idle,
)
from lengthwise.bench.speed import (
    counter_delta,
    engine_speed,
    is_outlier,
    relative_to_round,
)
from lengthwise.gateway.config import DEFAULT_PREDICTOR

#: What the LLM-guided arm asks of the gateway besides its predictor.
DEFAULT_GATEWAY_ARGS = ("--engine", "vllm", "--mode", "priority")


def default_gateway_args(engine_seats: int | None) -> tuple[str, ...]:
    """The guided arm's gateway arguments; with the engine's seats known (the embedded engine's
    `--max-num-seqs`), `--backend-seats` too, so that a request with a free seat goes at once
    and the costly candidates measure only while the engine has room (`predict.auto`)."""
    seats = () if engine_seats is None else ("--backend-seats", str(engine_seats))
    return (*DEFAULT_GATEWAY_ARGS, *seats)


@dataclass(frozen=True)
class Arm:
    """One scheduling configuration; `gateway_args` None sends straight to the engine."""

    name: str
    gateway_args: tuple[str, ...] | None = None
    oracle: bool = False


def _with_baselines(gateway_arms: Sequence[Arm]) -> list[Arm]:
    return [Arm("fcfs"), *gateway_arms, Arm("oracle", oracle=True)]


def standard_arms(predictors: Sequence[str] = (DEFAULT_PREDICTOR,), gateway_args: Sequence[str] = DEFAULT_GATEWAY_ARGS) -> list[Arm]:
    """FCFS (the engine alone), one gateway arm per predictor (the first is `guided`), oracle."""
    return _with_baselines([
        Arm("guided" if i == 0 else f"guided:{spec}", (*gateway_args, "--predictor", spec))
        for i, spec in enumerate(predictors)
    ])  # fmt: skip


#: An arm's name names its run files: letters, digits, `_ . + -`.
_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def parse_arm(spec: str) -> Arm:
    """`NAME=GATEWAY ARGS` (the arguments split as a shell would) as a gateway arm."""
    name, sep, args = spec.partition("=")
    name = name.strip()
    if not sep:
        raise ValueError(f"--arm {spec!r}: give NAME=GATEWAY ARGS, e.g. 'sjf=--mode queue --policy sjf'")
    if not _ARM_NAME.fullmatch(name):
        raise ValueError(f"--arm {spec!r}: a name of letters, digits and _ . + - (it names the run files)")
    if name in ("fcfs", "oracle"):
        raise ValueError(f"--arm {name}: fcfs and oracle are the comparison's own arms; choose another name")
    try:
        argv = tuple(shlex.split(args))
    except ValueError as exc:
        raise ValueError(f"--arm {name}: {exc}") from None
    if not argv:
        raise ValueError(f"--arm {name}: no gateway arguments after '='")
    return Arm(name, argv)


def custom_arms(specs: Sequence[str]) -> list[Arm]:
    """FCFS, a gateway arm per `NAME=GATEWAY ARGS` spec (`parse_arm`), oracle."""
    arms = [parse_arm(spec) for spec in specs]
    twice = sorted(name for name, k in Counter(a.name for a in arms).items() if k > 1)
    if twice:
        raise ValueError(f"--arm: each name once ({', '.join(twice)} given more than once)")
    return _with_baselines(arms)


def interleaved(arms: Sequence[Arm], rounds: int) -> list[list[Arm]]:
    """Run orders per round: A B C, C B A, B C A, A C B, C A B, B A C, then again.

    Round r turns the list by r // 2 places and reverses it when r is odd: over
    2 × arms rounds every arm runs in every position equally often, and with three
    arms each also follows every other equally often (a Williams design).
    """
    orders = []
    for r in range(rounds):
        k = (r // 2) % len(arms)
        turned = [*arms[k:], *arms[:k]]
        orders.append(turned if r % 2 == 0 else turned[::-1])
    return orders


@dataclass(frozen=True)
class Settings:
    engine_url: str
    model: str
    prompts: tuple[str, ...]
    max_tokens: int
    out_dir: Path
    scenarios: tuple[Scenario, ...] = (Scenario("poisson"),)
    rounds: int = 1
    seed: int = 0
    #: `time.monotonic()` by which calibration and runs should be done: the prompt count is fitted
    #: to it after a small calibration burst. None runs every prompt.
    deadline: float | None = None
    #: How engine and client share the CPU cores (recorded in the report).
    cpu_layout: str = "split"


@dataclass
class Calibration:
    """Every calibration request, and per burst [requests completed, makespan s] in `run.config["bursts"]`."""

    run: BenchRun

    @property
    def lengths(self) -> dict[str, int]:
        """Actual output tokens per request id."""
        return {r.id: r.output_tokens for r in self.run.succeeded}

    @property
    def capacity_rps(self) -> float:
        """Requests per second the engine completed at saturation, over every burst."""
        bursts = np.array(self.run.config["bursts"], dtype=float)
        return float(bursts[:, 0].sum() / bursts[:, 1].sum())

    @property
    def sent(self) -> set[str]:
        return {r.id for r in self.run.records}


@dataclass
class Comparison:
    """One scenario's runs, written under `folder`."""

    settings: Settings
    scenario: Scenario
    arms: list[Arm]
    calibration: Calibration
    prompts: int
    #: The runs' labels (file stems under runs/) in the order they ran.
    labels: list[str] = field(default_factory=list)

    @property
    def folder(self) -> Path:
        return self.settings.out_dir / self.scenario.name

    def meta(self) -> dict[str, Any]:
        """What the report states about the setup, and the run order to reload it."""
        s, capacity = self.settings, self.calibration.capacity_rps
        actual = self.calibration.lengths
        lengths = np.array([actual[f"r{i:04d}"] for i in range(self.prompts) if f"r{i:04d}" in actual])
        return {
            "scenario": self.scenario.name,
            "model": s.model,
            "engine": s.engine_url,
            "prompts": self.prompts,
            "max_tokens": s.max_tokens,
            "actual output tokens (calibration)": f"mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"{np.mean(lengths >= s.max_tokens):.0%} at the cap",
            "capacity_rps": round(capacity, 4),
            **self.scenario.describe(capacity),
            "seed": s.seed,
            "rounds": s.rounds,
            "cpu_layout": s.cpu_layout,
            "arms": {a.name: "straight to the engine" + (", priority = actual length" if a.oracle else "")
                     if a.gateway_args is None else "lengthwise serve " + " ".join(a.gateway_args) for a in self.arms},
            "run_order": list(self.labels),
        }  # fmt: skip

    def save(self) -> None:
        (self.folder / "comparison.json").write_text(json.dumps(self.meta(), indent=1))


def _fingerprint(settings: Settings) -> str:
    key = json.dumps([settings.model, settings.max_tokens, list(settings.prompts)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def calibrate(settings: Settings, count: int, console: Console) -> Calibration:
    """Send the first `count` prompts not calibrated yet at once to the engine; keep all in calibration.json.

    A rerun with the same prompts, model and cap reuses the file and sends only what it lacks.
    """
    path = settings.out_dir / "calibration.json"
    fingerprint = _fingerprint(settings)
    calibration = None
    if path.exists():
        cached = load_run(path)
        if cached.config.get("fingerprint") == fingerprint and "bursts" in cached.config:
            calibration = Calibration(cached)
    if calibration is None:
        config = {"label": "calibration", "url": settings.engine_url, "model": settings.model,
                  "fingerprint": fingerprint, "rate": "inf", "bursts": []}  # fmt: skip
        calibration = Calibration(BenchRun(config))
    plan = build_plan(settings.prompts[:count], [0.0] * count, settings.max_tokens)
    plan = [r for r in plan if r.id not in calibration.sent]
    if not plan:
        console.print(f"calibration: reusing {path}")
        return calibration
    console.print(f"calibration: {len(plan)} prompts at once, straight to the engine (capacity and actual lengths)")
    records = asyncio.run(replay(plan, Target(settings.engine_url, settings.model), label="calibration"))
    ok = [r for r in records if r.ok]
    if len(records) - len(ok) > len(records) // 10:
        failed = next(r for r in records if not r.ok)
        raise RuntimeError(f"calibration: {len(records) - len(ok)} of {len(records)} requests failed, e.g. {failed.error}")
    makespan = max(r.finish_time or 0.0 for r in ok) - min(r.arrival for r in ok)
    calibration.run.records.extend(records)
    calibration.run.config["bursts"].append([len(ok), makespan])
    save_run(path, calibration.run)
    return calibration


def _run(plan: Sequence[PlannedRequest], target: Target, label: str, extra: dict[str, object]) -> BenchRun:
    records = asyncio.run(replay(plan, target, label=label))
    return BenchRun(config={"label": label, "url": target.url, "model": target.model, **extra}, records=records)


def run_arm(
    arm: Arm, plan: Sequence[PlannedRequest], settings: Settings, calibration: Calibration, label: str, folder: Path
) -> BenchRun:
    """One arm over the plan: straight to the engine, or through a gateway started for it (log under `folder`)."""
    extra: dict[str, object] = {"arm": arm.name, "gateway_args": list(arm.gateway_args or [])}
    if arm.oracle:  # a prompt whose calibration failed counts as long
        lengths = calibration.lengths
        plan = with_priorities(plan, {r.id: lengths.get(r.id, r.max_tokens) for r in plan})
    if arm.gateway_args is None:
        return _run(plan, Target(settings.engine_url, settings.model), label, extra)
    port = free_port()
    cmd = gateway_command(settings.engine_url, port, arm.gateway_args)
    with running_server(cmd, f"http://127.0.0.1:{port}", folder / "logs" / f"gateway-{label}.log") as url:
        run = _run(plan, Target(url, settings.model), label, extra)
        # The gateway was started for this run: its counters (preemptions, resumes) are the run's.
        run.config["gateway_metrics"] = gateway_counters(url)
        return run


def _measured_run(
    arm: Arm, plan: Sequence[PlannedRequest], settings: Settings, calibration: Calibration, label: str, folder: Path
) -> BenchRun:
    """`run_arm` on an idle engine, with how much the engine's speed counters grew meanwhile."""
    wait_idle(settings.engine_url)
    before = engine_counters(settings.engine_url)
    run = run_arm(arm, plan, settings, calibration, label, folder)
    run.config["engine_metrics"] = counter_delta(before, engine_counters(settings.engine_url))
    return run


def plan_size(settings: Settings, arms: Sequence[Arm], console: Console) -> int:
    """Every prompt, or with a deadline as many as fit after a calibration burst of a few."""
    available = len(settings.prompts)
    runs = len(arms) * settings.rounds
    if settings.deadline is None:
        return available
    calibration = calibrate(settings, min(available, PROBE_PROMPTS), console)
    left = settings.deadline - time.monotonic()
    plan = fit_prompts(left, calibration.capacity_rps, settings.scenarios, runs, available, len(calibration.sent))
    console.print(f"budget: {left / 60:.1f} min left at {calibration.capacity_rps:.3f} req/s: {plan.text(runs)}")
    return plan.prompts


def run_compare(settings: Settings, arms: Sequence[Arm], console: Console) -> list[Comparison]:
    """Calibrate, size the plan, then run every arm `settings.rounds` times per scenario, interleaved.

    Writes calibration.json under `settings.out_dir` and, per scenario, plan.json (prompts
    and arrival times), runs/<label>.json and comparison.json under its folder as it goes,
    so an interrupted comparison keeps its runs.
    """
    n = plan_size(settings, arms, console)
    calibration = calibrate(settings, n, console)
    capacity = calibration.capacity_rps
    plan = estimate(n, capacity, settings.scenarios, len(arms) * settings.rounds, n)
    console.print(f"capacity {capacity:.3f} req/s on these prompts; plan: {plan.text(len(arms) * settings.rounds)}")
    return [_run_scenario(settings, scenario, arms, calibration, n, console) for scenario in settings.scenarios]


def _run_scenario(
    settings: Settings, scenario: Scenario, arms: Sequence[Arm], calibration: Calibration, n: int, console: Console
) -> Comparison:
    comparison = Comparison(settings, scenario, list(arms), calibration, n)
    folder = comparison.folder
    folder.mkdir(parents=True, exist_ok=True)
    arrivals = scenario.arrivals(n, calibration.capacity_rps, settings.seed)
    plan = build_plan(settings.prompts[:n], arrivals, settings.max_tokens)
    (folder / "plan.json").write_text(json.dumps([r.to_dict() for r in plan], indent=1))
    console.print(f"{scenario.name}: {scenario.describe(calibration.capacity_rps)['arrivals']}")
    for r, order in enumerate(interleaved(arms, settings.rounds), start=1):
        speeds = []
        for arm in order:
            label = f"round{r}-{arm.name.replace(':', '-')}"
            run = _measured_run(arm, plan, settings, calibration, label, folder)
            run.config.update(round=r, scenario=scenario.name, seed=settings.seed)
            save_run(folder / "runs" / f"{label}.json", run)
            comparison.labels.append(label)
            comparison.save()
            speed = engine_speed(run)
            speeds.append(speed.tokens_per_busy_s)
            console.print(f"  {label}: {speed.text()}")
        for arm, deviation in zip(order, relative_to_round([r] * len(order), speeds), strict=True):
            if is_outlier(deviation):
                console.print(f"  [yellow]round {r}: the engine ran {deviation:+.0%} against the round's median "
                              f"during {arm.name}: read this round's ratios with care[/yellow]")  # fmt: skip
    return comparison
