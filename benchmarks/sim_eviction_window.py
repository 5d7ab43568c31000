"""The query→request eviction window in the simulator: query everyone on arrival, or only the head of the queue.

Azure conversation trace on one H200 engine (Llama-3-8B cost model, LRU prefix
cache). Per load, the same arrivals under:

* FCFS, no query;
* the policy on the cheap (fallback) predictions alone, no query;
* the policy after a self-prediction query sent on arrival (what `--query` models: the
  real request then waits in vLLM's queue and may lose its prefix);
* the window rule, K = 1, 16, 64: requests wait ordered by the cheap prediction and only
  the K best are queried; a queried request waits among those K, ordered by its
  self-prediction, so it is admitted soon after its query;
* the policy on the self-predictions for free (no query: what no deployment gets).

Prints a markdown table of the query prefix reuse (the share of the prompt's full blocks
a real request found cached after its query) and mean / p99 E2E.
Run: `.venv/bin/python benchmarks/sim_eviction_window.py [--loads 0.7,0.9] [--windows 1,16,64]`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from rich.progress import Progress

from lengthwise.sim.engine import EngineConfig, QueryConfig
from lengthwise.sim.experiment import Arm, build_cost, build_workload, loads, run_arms, scale_to_load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", default="0.7,0.9")
    ap.add_argument("--windows", default="1,16,64")
    ap.add_argument("--n", type=int, default=None, help="requests (default the whole trace, 19,366)")
    ap.add_argument("--policy", default="sst", help="the predicted arms' policy")
    ap.add_argument("--predictions", default="lognormal:tau=0.5", help="what the self-prediction query gives")
    ap.add_argument("--fallback", default="lognormal:tau=0.3", help="the cheap predictor's predictions")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    args = ap.parse_args()
    config, cost = EngineConfig(max_num_seqs=args.max_num_seqs), build_cost()
    base = build_workload("azure", args.n)
    windows = [int(k) for k in args.windows.split(",")]
    print(
        f"Azure conv trace, {len(base):,} requests, one H200 engine (Llama-3-8B cost model), max_num_seqs "
        f"{config.max_num_seqs}, {config.num_blocks:,} blocks of {config.block_size}; policy {args.policy}; "
        f"self-prediction {args.predictions}, cheap predictor {args.fallback}; query: 60-token postfix, 4 tokens\n"
    )
    print("| load | arm | query prefix reuse | mean E2E s | p99 E2E s | mean TTFT s |")
    print("|---|---|---|---|---|---|")
    cells = [("FCFS, no query", "fcfs", None, "predictions"), ("cheap predictor alone", args.policy, None, "fallback"),
             ("query every request on arrival", args.policy, QueryConfig(), "predictions"),
             *((f"query window K = {k}", args.policy, QueryConfig(window=k), "predictions") for k in windows),
             ("self-prediction for free (reference)", args.policy, None, "predictions")]  # fmt: skip
    with Progress(transient=True) as bar:
        task = bar.add_task("simulating", total=len(loads(args.loads)) * len(cells))
        for load in loads(args.loads):
            w, _ = scale_to_load(base, load, config, cost)
            for name, policy, query, source in cells:
                bar.update(task, description=f"load {load:g} {name}")
                spec = args.fallback if source == "fallback" else args.predictions
                (result,) = run_arms(
                    w, [Arm(policy)], replace(config, query=query), cost, spec,
                    seed=1 if source == "fallback" else 0,  # run_arms draws the fallback with seed + 1: the same draw
                    fallback=args.fallback if query is not None and query.window else None,
                )  # fmt: skip
                m = result.metrics
                reuse = f"{m['query_prefix_reuse']:.1%}" if "query_prefix_reuse" in m else "–"
                print(f"| {load:g} | {name} | {reuse} | {m['mean_e2el_ms'] / 1e3:.2f} | {m['p99_e2el_ms'] / 1e3:.1f} | "
                      f"{m['mean_ttft_ms'] / 1e3:.2f} |", flush=True)  # fmt: skip
                bar.advance(task)


if __name__ == "__main__":
    main()
