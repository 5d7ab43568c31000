"""Disaggregated prefill with the prediction read from the prefill pass, against colocated serving.

Azure conversation trace, H200 Llama-3-8B cost model, loads given as fractions of
the FCFS capacity of prefill + decode colocated engines (the same GPUs). Per load
and P:D split, the arms (same arrivals, same predictions):

* P/D + prediction: prefill of prompt + postfix, decode instance chosen by
  predicted work, decode admission by the policy (default `sst+deadline`);
* P/D FCFS: prefill of the prompt alone, decode by queue length and arrival;
* colocated + query: every engine runs the self-prediction query (prompt +
  postfix, a few tokens, top priority) before each request, then the policy;
* colocated FCFS, and colocated + prediction without a query (the prediction
  free: what no deployment gets, for reference).

Prints one markdown table (mean and p99 TTFT and E2E, decode-pool busy share and
seat share, KV bytes moved) and writes every metric to --out as JSON.
Run: `.venv/bin/python benchmarks/sim_disaggregated.py [--loads 0.7,0.9,1.1] [--splits 2:2,3:1] [--out F.json]`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from rich.progress import Progress

from lengthwise.core.policy import DEFAULT_POLICY
from lengthwise.sim.disaggregated import Disaggregation, run_colocated, run_disaggregated
from lengthwise.sim.engine import EngineConfig, QueryConfig
from lengthwise.sim.experiment import build_cost, build_workload, loads, scale_to_load
from lengthwise.sim.predictions import make_predictions

COLUMNS = ("mean TTFT s", "p99 TTFT s", "mean E2E s", "p99 E2E s", "decode busy", "decode seats", "KV moved GB")


def _row(m: dict[str, float]) -> list[str]:
    return [f"{m['mean_ttft_ms'] / 1e3:.2f}", f"{m['p99_ttft_ms'] / 1e3:.2f}", f"{m['mean_e2el_ms'] / 1e3:.2f}",
            f"{m['p99_e2el_ms'] / 1e3:.1f}", f"{m['decode_busy']:.2f}", f"{m['decode_seat_share']:.2f}",
            f"{m['kv_bytes_moved'] / 1e9:,.0f}"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loads", default="0.7,0.8,0.9,1.0,1.1")
    ap.add_argument("--splits", default="2:2,3:1", help="prefill:decode engine counts, comma-separated")
    ap.add_argument("--n", type=int, default=None, help="requests (default the whole trace, 19,366)")
    ap.add_argument("--policy", default=DEFAULT_POLICY, help="the prediction arms' policy")
    ap.add_argument("--predictions", default="lognormal:tau=0.5")
    ap.add_argument("--postfix-tokens", type=int, default=60)
    ap.add_argument("--kv-bandwidth", type=float, default=50.0, help="GB/s per prefill instance")
    ap.add_argument("--kv-latency", type=float, default=1.0, help="ms per transfer")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    config, cost = EngineConfig(), build_cost()
    query = QueryConfig(postfix_tokens=args.postfix_tokens)
    base = build_workload("azure", args.n)
    base = base.with_predictions(make_predictions(args.predictions, base.output_tokens, 0))
    splits = [tuple(int(x) for x in s.split(":")) for s in args.splits.split(",")]
    grid = loads(args.loads)
    print(
        f"Azure conv trace, {len(base):,} requests; H200 Llama-3-8B cost model ({cost.kv_bytes_per_token:,.0f} KV "
        f"bytes/token); max_num_seqs {config.max_num_seqs}, budget {config.max_num_batched_tokens}, "
        f"{config.num_blocks:,} blocks per engine; predictions {args.predictions}; policy {args.policy}; "
        f"postfix {args.postfix_tokens} tokens; KV link {args.kv_bandwidth:g} GB/s + {args.kv_latency:g} ms\n"
    )
    print("| P:D | load | req/s | arm | " + " | ".join(COLUMNS) + " |")
    print("|---" * (4 + len(COLUMNS)) + "|")
    saved: dict[str, dict[str, float]] = {}
    with Progress(transient=True) as bar:
        task = bar.add_task("simulating", total=len(splits) * len(grid) * 5)
        for p, d in splits:
            spec = Disaggregation(p, d, args.kv_bandwidth, args.kv_latency)
            for load in grid:
                w, capacity = scale_to_load(base, load, config, cost, spec.instances)
                rate = load * capacity
                arms = {
                    f"P/D + prediction ({args.policy})": lambda: run_disaggregated(
                        w, args.policy, config, cost, spec, postfix_tokens=args.postfix_tokens, predicted=True),
                    "P/D FCFS": lambda: run_disaggregated(
                        w, "fcfs", config, cost, spec, postfix_tokens=args.postfix_tokens, predicted=False),
                    f"colocated + query ({args.policy})": lambda: run_colocated(
                        w, args.policy, replace(config, query=query), cost, spec.instances),
                    "colocated FCFS": lambda: run_colocated(w, "fcfs", config, cost, spec.instances),
                    "colocated, prediction free (reference)": lambda: run_colocated(
                        w, args.policy, config, cost, spec.instances),
                }  # fmt: skip
                for arm, run in arms.items():
                    bar.update(task, description=f"{p}:{d} load {load:g} {arm}")
                    m = run().metrics
                    saved[f"{p}:{d} load {load:g} {arm}"] = m | {"rate": rate}
                    extra = f" (query prefix reuse {m['query_prefix_reuse']:.0%})" if "query_prefix_reuse" in m else ""
                    print(f"| {p}:{d} | {load:g} | {rate:.1f} | {arm}{extra} | " + " | ".join(_row(m)) + " |", flush=True)
                    bar.advance(task)
    if args.out is not None:
        args.out.write_text(json.dumps(saved, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
