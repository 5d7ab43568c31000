"""FCFS vs LLM-guided vs oracle on one engine: the same prompts, the same arrival times.

A calibration pass first sends every prompt at once straight to the engine: its
makespan measures the engine's capacity on these prompts (so the load can be set
to a fraction of it) and its outputs, at temperature 0, are the actual lengths the
oracle schedules by. Then the arms run in interleaved rounds (A B C, then C B A,
...) so that a slow spell of the shared machine does not fall on one arm only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from lengthwise.bench.loadgen import Target, replay
from lengthwise.bench.plan import PlannedRequest, build_plan, with_priorities
from lengthwise.bench.runfile import BenchRun, load_run, save_run
from lengthwise.bench.services import free_port, gateway_command, running_server, wait_idle
from lengthwise.gateway.config import DEFAULT_PREDICTOR
from lengthwise.workload.arrivals import gamma_arrivals

#: What the LLM-guided arm asks of the gateway besides its predictor.
DEFAULT_GATEWAY_ARGS = ("--engine", "vllm", "--mode", "priority", "--policy", "sjf")


@dataclass(frozen=True)
class Arm:
    """One scheduling configuration; `gateway_args` None sends straight to the engine."""

    name: str
    gateway_args: tuple[str, ...] | None = None
    oracle: bool = False


def standard_arms(predictors: Sequence[str] = (DEFAULT_PREDICTOR,), gateway_args: Sequence[str] = DEFAULT_GATEWAY_ARGS) -> list[Arm]:
    """FCFS (the engine alone), one gateway arm per predictor (the first is `guided`), oracle."""
    guided = [
        Arm("guided" if i == 0 else f"guided:{spec}", (*gateway_args, "--predictor", spec))
        for i, spec in enumerate(predictors)
    ]
    return [Arm("fcfs"), *guided, Arm("oracle", oracle=True)]


def interleaved(arms: Sequence[Arm], rounds: int) -> list[list[Arm]]:
    """Run orders per round: A B C, C B A, A B C, ..."""
    return [list(arms) if r % 2 == 0 else list(reversed(arms)) for r in range(rounds)]


@dataclass(frozen=True)
class Settings:
    engine_url: str
    model: str
    prompts: tuple[str, ...]
    max_tokens: int
    out_dir: Path
    rounds: int = 1
    load: float = 0.9
    rate: float | None = None
    burstiness: float = 1.0
    seed: int = 0


@dataclass
class Calibration:
    """Actual lengths per request id and the saturated throughput of the engine."""

    lengths: dict[str, int]
    capacity_rps: float
    run: BenchRun


@dataclass
class Comparison:
    settings: Settings
    arms: list[Arm]
    calibration: Calibration
    rate: float
    #: The runs' labels (file stems under runs/) in the order they ran.
    labels: list[str] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        """What the report states about the setup, and the run order to reload it."""
        s, lengths = self.settings, np.array(list(self.calibration.lengths.values()))
        return {
            "model": s.model,
            "engine": s.engine_url,
            "prompts": len(s.prompts),
            "max_tokens": s.max_tokens,
            "actual output tokens (calibration)": f"mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"{np.mean(lengths >= s.max_tokens):.0%} at the cap",
            "capacity_rps": round(self.calibration.capacity_rps, 4),
            "rate_rps": round(self.rate, 4),
            "load": round(self.rate / self.calibration.capacity_rps, 3),
            "burstiness": s.burstiness,
            "seed": s.seed,
            "rounds": s.rounds,
            "arms": {a.name: "straight to the engine" + (", priority = actual length" if a.oracle else "")
                     if a.gateway_args is None else "lengthwise serve " + " ".join(a.gateway_args) for a in self.arms},
            "run_order": list(self.labels),
        }  # fmt: skip

    def save(self) -> None:
        (self.settings.out_dir / "comparison.json").write_text(json.dumps(self.meta(), indent=1))


def _fingerprint(settings: Settings) -> str:
    key = json.dumps([settings.model, settings.max_tokens, list(settings.prompts)])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def calibrate(settings: Settings, console: Console) -> Calibration:
    """Send every prompt at once to the engine (reused from `out_dir` when it matches)."""
    path = settings.out_dir / "calibration.json"
    fingerprint = _fingerprint(settings)
    if path.exists():
        cached = load_run(path)
        if cached.config.get("fingerprint") == fingerprint:
            console.print(f"calibration: reusing {path}")
            return _calibration_from(cached)
    plan = build_plan(settings.prompts, [0.0] * len(settings.prompts), settings.max_tokens)
    console.print(f"calibration: {len(plan)} prompts at once, straight to the engine (capacity and actual lengths)")
    run = _run(plan, Target(settings.engine_url, settings.model), "calibration", {"fingerprint": fingerprint, "rate": "inf"})
    failed = [r for r in run.records if not r.ok]
    if len(failed) > len(run.records) // 10:
        raise RuntimeError(f"calibration: {len(failed)} of {len(run.records)} requests failed, e.g. {failed[0].error}")
    save_run(path, run)
    return _calibration_from(run)


def _calibration_from(run: BenchRun) -> Calibration:
    ok = run.succeeded
    makespan = max(r.finish_time or 0.0 for r in ok) - min(r.arrival for r in ok)
    return Calibration({r.id: r.output_tokens for r in ok}, len(ok) / makespan, run)


def _run(plan: Sequence[PlannedRequest], target: Target, label: str, extra: dict[str, object]) -> BenchRun:
    records = asyncio.run(replay(plan, target, label=label))
    return BenchRun(config={"label": label, "url": target.url, "model": target.model, **extra}, records=records)


def run_arm(arm: Arm, plan: Sequence[PlannedRequest], settings: Settings, calibration: Calibration, label: str) -> BenchRun:
    """One arm over the plan: straight to the engine, or through a gateway started for it."""
    extra: dict[str, object] = {"arm": arm.name, "gateway_args": list(arm.gateway_args or [])}
    if arm.oracle:  # a prompt whose calibration failed counts as long
        plan = with_priorities(plan, {r.id: calibration.lengths.get(r.id, r.max_tokens) for r in plan})
    if arm.gateway_args is None:
        return _run(plan, Target(settings.engine_url, settings.model), label, extra)
    port = free_port()
    log = settings.out_dir / "logs" / f"gateway-{label}.log"
    cmd = gateway_command(settings.engine_url, port, arm.gateway_args)
    with running_server(cmd, f"http://127.0.0.1:{port}", log) as url:
        return _run(plan, Target(url, settings.model), label, extra)


def run_compare(settings: Settings, arms: Sequence[Arm], console: Console) -> Comparison:
    """Calibrate, set the rate, then run every arm `settings.rounds` times, interleaved.

    Writes plan.json (prompts and arrival times), runs/<label>.json and comparison.json
    under `settings.out_dir` as it goes, so an interrupted comparison keeps its runs.
    """
    calibration = calibrate(settings, console)
    rate = settings.rate or settings.load * calibration.capacity_rps
    span_min = len(settings.prompts) / rate / 60
    console.print(
        f"capacity {calibration.capacity_rps:.3f} req/s on these prompts; arrivals at {rate:.3f} req/s"
        + ("" if settings.rate else f" (load {settings.load:.2f})")
        + f": {len(arms) * settings.rounds} runs of about {span_min:.1f} min each"
    )
    arrivals = gamma_arrivals(len(settings.prompts), rate, settings.burstiness, settings.seed)
    plan = build_plan(settings.prompts, arrivals, settings.max_tokens)
    (settings.out_dir / "plan.json").write_text(json.dumps([r.to_dict() for r in plan], indent=1))
    comparison = Comparison(settings, list(arms), calibration, rate)
    for r, order in enumerate(interleaved(arms, settings.rounds)):
        for arm in order:
            wait_idle(settings.engine_url)
            label = f"round{r + 1}-{arm.name.replace(':', '-')}"
            run = run_arm(arm, plan, settings, calibration, label)
            run.config.update(round=r + 1, rate=rate, burstiness=settings.burstiness, seed=settings.seed)
            save_run(settings.out_dir / "runs" / f"{label}.json", run)
            comparison.labels.append(label)
            comparison.save()
    return comparison
