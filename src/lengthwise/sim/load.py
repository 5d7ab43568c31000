"""Offered load: an engine's capacity for a workload's length mix, and arrivals scaled to a load."""

from __future__ import annotations

import numpy as np

from lengthwise.core.policy.fcfs import FCFS
from lengthwise.sim.cost import CostModel
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.workload import Workload
from lengthwise.workload.arrivals import rescale_to_rate


def capacity(workload: Workload, config: EngineConfig, cost: CostModel, sample: int = 4000, seed: int = 0) -> float:
    """Requests/s the engine sustains on this length mix: FCFS with a random sample queued at once.

    Throughput is counted until the last request is admitted, while the batch is
    still full, so the drain at the end does not count against it.
    """
    n = min(sample, len(workload))
    if n < 2 * config.max_num_seqs:
        raise ValueError(f"need at least {2 * config.max_num_seqs} requests to measure capacity, got {n}")
    idx = np.sort(np.random.default_rng(seed).choice(len(workload), n, replace=False))
    sampled = Workload(np.zeros(n), workload.prompt_tokens[idx], workload.output_tokens[idx], workload.predicted[idx])
    records = Simulator(config, cost, FCFS()).run(sampled).records
    last_admit = max(r.scheduled_time or 0.0 for r in records)
    done = sum(r.finish_time is not None and r.finish_time <= last_admit for r in records)
    if last_admit <= 0 or done == 0:
        raise ValueError("capacity run finished too soon to measure: use a larger sample")
    return done / last_admit


def at_load(workload: Workload, load: float, capacity_rps: float) -> Workload:
    """The workload's arrival pattern rescaled to `load` × capacity requests/s."""
    if not load > 0:
        raise ValueError(f"load must be positive, got {load}")
    return workload.with_arrivals(rescale_to_rate(workload.arrival, load * capacity_rps))
