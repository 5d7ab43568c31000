"""Simulator speed: 100,000 requests of the Azure conversation trace at 90% load, H200 cost model.

Prints wall time, CPU time, requests simulated per second and peak RSS for FCFS
and for predicted SJF. Target: <= 20 s and <= 1 GB on one core. Pinned to one core
when the OS allows; on a shared machine the CPU time is the steadier figure. Run: `.venv/bin/python benchmarks/sim_speed.py [N]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

from lengthwise.core.policy import make_policy
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.experiment import build_cost, build_workload, scale_to_load
from lengthwise.sim.predictions import make_predictions


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--pin", action="store_true", help="pin the process to one core")
    args = ap.parse_args()
    n = args.n
    if args.pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    config, cost = EngineConfig(), build_cost()
    t0 = time.perf_counter()
    workload, cap = scale_to_load(build_workload("azure", n), 0.9, config, cost)
    predicted = workload.with_predictions(make_predictions("lognormal:tau=0.5", workload.output_tokens))
    print(f"setup (trace, capacity {cap:.2f} req/s, predictions): {time.perf_counter() - t0:.1f} s")
    for label, w, spec in (("fcfs", workload, "fcfs"), ("sjf (predicted, tau 0.5)", predicted, "sjf")):
        t0, c0 = time.perf_counter(), time.process_time()
        result = Simulator(config, cost, make_policy(spec)).run(w)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"{label:26s} {len(w):,} requests: wall {wall:5.1f} s ({len(w) / wall:7,.0f} req/s), "
            f"CPU {cpu:5.1f} s ({len(w) / cpu:7,.0f} req/s); {result.steps:,} engine steps; "
            f"peak RSS {peak_rss_mb():,.0f} MB"
        )


if __name__ == "__main__":
    main()
