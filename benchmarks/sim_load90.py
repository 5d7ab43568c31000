"""Policies at 90% load on the Azure conversation trace, H200 cost model: ratios against FCFS.

Targets: predicted SJF with Kendall tau ~0.5 captures >= 70% of the oracle SJF's
mean-E2E reduction; with aging, the p99 E2E of the longest 10% stays <= 1.5x FCFS's.
Prints every arm, the ratios, the prediction-noise seeds' spread, and an aging
grid (the trade-off between mean latency and the long requests' tail).
Run: `.venv/bin/python benchmarks/sim_load90.py [--max-num-seqs N] [--seeds K]`.
"""

from __future__ import annotations

import argparse
import statistics

from lengthwise.sim.engine import EngineConfig, QueryConfig
from lengthwise.sim.experiment import Arm, build_cost, build_workload, reduction_captured, run_arms, scale_to_load

AGING = ("sjf+aging:rate=10", "sjf+aging:rate=30", "sjf+aging:rate=60", "sjf+aging:max_wait=30", "sjf+aging:max_wait=60")
#: SJF that also counts the prompt (prefill is most of the work in this trace), and shortest prompt first.
PROMPT_AWARE = ("sjf:prompt_weight=0.2@oracle", "sjf:prompt_weight=0.2", "sjf:prompt_weight=0.2+aging:max_wait=60",
                "sjf:prompt_weight=1000")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, default=3, help="prediction-noise seeds for the predicted-SJF ratio")
    args = ap.parse_args()
    config, cost = EngineConfig(max_num_seqs=args.max_num_seqs), build_cost()
    workload, cap = scale_to_load(build_workload("azure", None), args.load, config, cost)
    print(
        f"Azure conv trace, {len(workload):,} requests at {args.load:g} x FCFS capacity ({cap:.2f} req/s); "
        f"H200 Llama-3-8B cost model; max_num_seqs {config.max_num_seqs}, budget {config.max_num_batched_tokens}"
    )
    arms = [Arm("fcfs"), Arm("sjf@oracle"), Arm("sjf"), *(Arm(a) for a in AGING + PROMPT_AWARE)]
    results = {r.arm.spec: r.metrics for r in run_arms(workload, arms, config, cost, "lognormal:tau=0.5", seed=0)}
    fcfs = results["fcfs"]
    print(f"\n{'arm (predictions: log-normal, tau 0.5)':42s} {'mean E2E':>9s} {'/FCFS':>6s} {'p50':>7s} {'p99':>8s} "
          f"{'TTFT':>7s} {'long10 p99':>10s} {'/FCFS':>6s} {'max wait':>9s}")  # fmt: skip
    for spec, m in results.items():
        print(
            f"{spec:42s} {m['mean_e2el_ms'] / 1e3:8.2f}s {m['mean_e2el_ms'] / fcfs['mean_e2el_ms']:6.3f} "
            f"{m['median_e2el_ms'] / 1e3:6.2f}s {m['p99_e2el_ms'] / 1e3:7.1f}s {m['mean_ttft_ms'] / 1e3:6.2f}s "
            f"{m['p99_e2el_longest10_ms'] / 1e3:9.1f}s {m['p99_e2el_longest10_ms'] / fcfs['p99_e2el_longest10_ms']:6.2f} "
            f"{m['max_wait_ms'] / 1e3:8.1f}s"
        )
    oracle = results["sjf@oracle"]["mean_e2el_ms"]
    print(f"\noracle-SJF / FCFS mean E2E: {oracle / fcfs['mean_e2el_ms']:.3f}")
    captured = []
    for seed in range(args.seeds):
        (r,) = run_arms(workload, [Arm("sjf")], config, cost, "lognormal:tau=0.5", seed=seed)
        captured.append(reduction_captured(fcfs["mean_e2el_ms"], oracle, r.metrics["mean_e2el_ms"]))
        print(
            f"predicted-SJF / FCFS mean E2E, noise seed {seed}: {r.metrics['mean_e2el_ms'] / fcfs['mean_e2el_ms']:.3f} "
            f"(captures {captured[-1]:.0%} of the oracle's reduction)"
        )
    print(f"captured: median {statistics.median(captured):.0%}, range {min(captured):.0%}-{max(captured):.0%}")
    ok = [a for a in AGING if results[a]["p99_e2el_longest10_ms"] <= 1.5 * fcfs["p99_e2el_longest10_ms"]]
    print(f"aging arms with longest-10% p99 <= 1.5x FCFS: {', '.join(ok) or 'none'}")
    query = EngineConfig(max_num_seqs=args.max_num_seqs, query=QueryConfig(postfix_tokens=60, output_tokens=4))
    (q,) = run_arms(workload, [Arm("sjf")], query, cost, "lognormal:tau=0.5", seed=0)
    print(
        f"\nwith the prediction query simulated (60-token postfix, 4 tokens, top priority): predicted-SJF / FCFS "
        f"mean E2E {q.metrics['mean_e2el_ms'] / fcfs['mean_e2el_ms']:.3f}, query prefix reuse "
        f"{q.metrics['query_prefix_reuse']:.1%}"
    )


if __name__ == "__main__":
    main()
