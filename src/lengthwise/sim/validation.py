"""Check the simulator against a measured run: same arrivals, prompt and output lengths, same policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lengthwise.core.records import load_records, summarize
from lengthwise.core.policy.registry import make_policy
from lengthwise.sim.cost import CostModel
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.workload import records_workload

COMPARED = ("mean_e2el_ms", "median_e2el_ms", "p90_e2el_ms", "mean_ttft_ms", "mean_tpot_ms", "request_throughput")


def compare_to_measured(path: Path, cost: CostModel, config: EngineConfig, policy: str = "fcfs") -> dict[str, Any]:
    """Replay the completed requests of a measured run and return measured/simulated pairs of metrics.

    Arrival times are the measured ones, shifted so the first is at 0; the measured
    records are shifted the same way, so both sides count from the same instant.
    """
    measured = [r for r in load_records(path) if r.ok and r.output_tokens > 0]
    if not measured:
        raise ValueError(f"{path}: no completed requests to replay")
    workload = records_workload(measured)
    simulated = Simulator(config, cost, make_policy(policy)).run(workload).records
    m, s = summarize(measured), summarize(simulated)
    return {
        "requests": len(measured),
        "metrics": {key: (m[key], s[key]) for key in COMPARED},
        "mean_e2el_error": (s["mean_e2el_ms"] - m["mean_e2el_ms"]) / m["mean_e2el_ms"],
    }
