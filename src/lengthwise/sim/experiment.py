"""Experiments: one workload at one load, several policy arms, the same arrivals for all.

An arm is a policy spec, optionally with ``@oracle`` to schedule on the true
lengths instead of the predictions: ``fcfs``, ``sjf``, ``sjf@oracle``,
``sjf+aging:rate=30``. Everything here is shared by the CLI and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lengthwise.core.data import H200_LLAMA3_8B_PROFILE, packaged
from lengthwise.core.records import load_records, summarize
from lengthwise.core.policy.registry import make_policy
from lengthwise.sim.cost import CostModel, load_cost_model
from lengthwise.sim.engine import EngineConfig, SimResult, Simulator
from lengthwise.sim.load import at_load, capacity
from lengthwise.sim.predictions import make_predictions
from lengthwise.sim.workload import Workload, azure_workload, from_trace, records_workload, sharegpt_workload
from lengthwise.workload.arrivals import gamma_arrivals
from lengthwise.workload.trace import trace_from_spec

ORACLE_SUFFIX = "@oracle"


def build_cost(profile: Path | None = None, overhead_ms: float | None = None) -> CostModel:
    """A cost model from a profile JSON (default: the shipped H200 building blocks)."""
    path = profile or packaged(H200_LLAMA3_8B_PROFILE)
    return load_cost_model(path, None if overhead_ms is None else overhead_ms / 1000)


WORKLOADS = "azure, sharegpt, trace:PATH[,arrival=COL,prompt=COL,output=COL] or records:PATH"


def build_workload(
    source: str, n: int | None, *, arrivals: str = "trace", burstiness: float = 1.0, seed: int = 0,
    max_output: int | None = None,
) -> Workload:  # fmt: skip
    """Requests from ``azure`` (the conversation trace), ``sharegpt`` (dev lengths), ``trace:PATH`` (a CSV or
    JSONL trace, `lengthwise.workload.trace`; ``azure:PATH`` is the same) or ``records:PATH`` (a run's records).

    `n` tiles a trace in time (copies back to back) or cuts it; ShareGPT draws `n` prompts.
    `arrivals`: ``trace`` keeps the source's own timing (Poisson for ShareGPT),
    ``gamma`` replaces it with gamma arrivals of the given burstiness (1 = Poisson),
    ``burst`` sends every request at t=0.
    The rate is set later, from the target load. `max_output` caps output lengths,
    as an engine's max_tokens would (see `predictions.output_cap`).
    """
    kind, _, path = source.partition(":")
    if source == "azure":
        w = azure_workload()
    elif source == "sharegpt":
        w = sharegpt_workload(n or 2000, rate=1.0, burstiness=burstiness, seed=seed)
    elif kind in ("trace", "azure") and path:
        w = from_trace(trace_from_spec(path))
    elif kind == "records" and path:
        w = records_workload(load_records(Path(path)), f"records {path}")
    else:
        raise ValueError(f"unknown workload {source!r}: use {WORKLOADS}")
    if n is not None and source != "sharegpt":
        w = w.tiled(n)
    if max_output is not None:
        w = replace(w, output_tokens=np.minimum(w.output_tokens, max_output))
    if arrivals == "gamma":
        return w.with_arrivals(gamma_arrivals(len(w), 1.0, burstiness, seed))
    if arrivals == "burst":
        return w.with_arrivals(np.zeros(len(w)))
    if arrivals != "trace":
        raise ValueError(f"unknown arrivals {arrivals!r}: use trace, gamma or burst")
    return w


@dataclass(frozen=True)
class Arm:
    """One policy run: a spec and whether it sees the predictions or the truth."""

    spec: str

    @property
    def policy_spec(self) -> str:
        return self.spec.removesuffix(ORACLE_SUFFIX)

    @property
    def oracle(self) -> bool:
        return self.spec.endswith(ORACLE_SUFFIX)

    def validate(self) -> None:
        make_policy(self.policy_spec)


@dataclass
class ArmResult:
    arm: Arm
    result: SimResult
    metrics: dict[str, float]


def run_arms(
    workload: Workload,
    arms: Sequence[Arm],
    config: EngineConfig,
    cost: CostModel,
    predictions: str | np.ndarray = "oracle",
    *,
    seed: int = 0,
    goodput: Sequence[str] | None = None,
    on_arm: Callable[[Arm], None] | None = None,
    progress: Callable[[int], None] | None = None,
    fallback: str | None = None,
) -> list[ArmResult]:
    """Run each arm on the same workload; predicted arms share one draw of predictions.

    `predictions`: a spec (`predictions.make_predictions`), or one predicted length per
    request as given (a replay that already holds each request's own prediction).

    `fallback`: the cheap predictions a query window orders waiting requests by
    (`QueryConfig.window`), drawn independently of the predictions.
    """
    for arm in arms:
        arm.validate()
    predicted = (np.asarray(predictions, dtype=float) if isinstance(predictions, np.ndarray)
                 else make_predictions(predictions, workload.output_tokens, seed))
    if fallback is not None:
        workload = replace(workload, fallback=make_predictions(fallback, workload.output_tokens, seed + 1))
    out = []
    for arm in arms:
        if on_arm is not None:
            on_arm(arm)
        w = workload.with_predictions(workload.output_tokens.astype(float) if arm.oracle else predicted)
        result = Simulator(config, cost, make_policy(arm.policy_spec)).run(w, progress)
        metrics = summarize(result.records, goodput=goodput) | result.stats()
        out.append(ArmResult(arm, result, metrics))
    return out


def scale_to_load(
    workload: Workload, load: float, config: EngineConfig, cost: CostModel, engines: int = 1
) -> tuple[Workload, float]:
    """The workload at `load` × the FCFS capacity of `engines` such engines for its length mix; also that capacity.

    Capacity is measured without prediction queries, so a load means the same
    arrival rate with and without them.
    """
    cap = engines * capacity(workload, replace(config, query=None), cost)
    return at_load(workload, load, cap), cap


def reduction_captured(fcfs: float, oracle: float, predicted: float) -> float:
    """Share of the oracle's improvement over FCFS that the predicted arm achieves."""
    gain = fcfs - oracle
    return float("nan") if gain == 0 else (fcfs - predicted) / gain


def loads(text: str) -> list[float]:
    """``0.5,0.7,0.9`` into floats, each > 0."""
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or min(values) <= 0:
        raise ValueError(f"loads must be positive numbers, got {text!r}")
    return values

