"""The gateway's preemption (`lengthwise serve --preempt`) in the simulator: gain and wasted work (issue #16).

Two tables:

1. Load: the Azure conversation trace and ShareGPT dev lengths at 64 and 256 seats and
   loads 0.9, 1.0, 1.1 (H200 Llama-3-8B cost model, predictions of Kendall tau 0.5): FCFS,
   the policy non-preemptive, and the policy with the gateway's preemption (same
   predictions, same arrivals): mean and p99 E2E over FCFS's, preemptions, the resumes'
   recomputed prefill as a share of all prefill (the wasted work), and the share of resumed
   tokens the prefix cache still held.
2. Burst (`--burst N`): N ShareGPT dev prompts at t=0, max_tokens 128, on the embedded
   engine's cost model (vLLM CPU, `docs/results/sim_validation/cpu-profile.json`, its
   128-token blocks, 682 blocks, 2,048-token budget) at 4 and 8 seats, all queued at once
   or the first `seats` of them sent at once (`BURST_ENTRIES`): preemptive SRPT, SJF, the
   default policy with and without preemption, each over FCFS, averaged over `--draws`
   draws of the prompts (and of the prediction noise), for comparison with the real
   engine's measured ratio.

Run: `nice -n 19 taskset -c 0 .venv/bin/python benchmarks/sim_preempt.py [--out DIR]`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from lengthwise.core.policy import DEFAULT_POLICY
from lengthwise.core.preempt import PreemptSettings
from lengthwise.sim.engine import EngineConfig
from lengthwise.sim.experiment import Arm, build_cost, build_workload, run_arms, scale_to_load

PREDICTIONS = "lognormal:tau=0.5"
#: The embedded engine's cost model and KV settings (docs/SIMULATOR.md, "Validation against the real engine").
CPU_PROFILE = Path(__file__).resolve().parents[1] / "docs/results/sim_validation/cpu-profile.json"
CPU_ENGINE = {"block_size": 128, "num_blocks": 682, "max_num_batched_tokens": 2048}


def load_rows(workloads: list[str], seats: list[int], loads: list[float], policy: str, settings: PreemptSettings,
              sharegpt_n: int, azure_n: int | None) -> list[dict[str, object]]:  # fmt: skip
    cost, rows = build_cost(), []
    for source in workloads:
        base = build_workload(source, sharegpt_n if source == "sharegpt" else azure_n)
        for n_seats in seats:
            config = EngineConfig(max_num_seqs=n_seats)
            for load in loads:
                w, cap = scale_to_load(base, load, config, cost)
                fcfs, plain = run_arms(w, [Arm("fcfs"), Arm(policy)], config, cost, PREDICTIONS)
                (pre,) = run_arms(w, [Arm(policy)], replace(config, preempt=settings), cost, PREDICTIONS)
                f, p, q = fcfs.metrics, plain.metrics, pre.metrics
                rows.append({
                    "workload": source, "requests": len(w), "seats": n_seats, "load": load, "rate": load * cap,
                    "fcfs_mean_s": f["mean_e2el_ms"] / 1e3,
                    "plain_mean": p["mean_e2el_ms"] / f["mean_e2el_ms"], "pre_mean": q["mean_e2el_ms"] / f["mean_e2el_ms"],
                    "plain_p99": p["p99_e2el_ms"] / f["p99_e2el_ms"], "pre_p99": q["p99_e2el_ms"] / f["p99_e2el_ms"],
                    "gain": q["mean_e2el_ms"] / p["mean_e2el_ms"], "preemptions": q["preemptions"],
                    "wasted": q["resume_prefill_share"], "cached": q["resume_cached_share"],
                })  # fmt: skip
                print(_load_line(rows[-1]), flush=True)
    return rows


LOAD_HEADER = ("| workload | seats | load | FCFS mean E2E | non-preemptive mean / FCFS | preemptive mean / FCFS "
               "| preemptive / non-preemptive | non-pre p99 / FCFS | pre p99 / FCFS | preemptions "
               "| resume prefill share | resumed tokens cached |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def _load_line(r: dict[str, object]) -> str:
    return (f"| {r['workload']} ({r['requests']:,}) | {r['seats']} | {r['load']:.1f} | {r['fcfs_mean_s']:.2f} s "
            f"| {r['plain_mean']:.3f} | {r['pre_mean']:.3f} | **{r['gain']:.3f}** | {r['plain_p99']:.3f} "
            f"| {r['pre_p99']:.3f} | {r['preemptions']:,.0f} | {r['wasted']:.2%} "
            f"| {format(r['cached'], '.1%') if r['preemptions'] else '–'} |")


#: Burst arms: (label, policy, gateway preemption).
BURST_ARMS = (("preemptive SRPT", "srpt", True), ("SJF", "sjf", False),
              (f"{DEFAULT_POLICY} + preempt", DEFAULT_POLICY, True), (DEFAULT_POLICY, DEFAULT_POLICY, False))
#: How the burst reaches the engine: all queued at once (admitted in policy order), or the first `seats`
#: sent at once, in arrival order, as the gateway forwards a request while its backend has a free seat
#: (predicted in the background, `lazy_prediction`), the rest queued a moment later.
BURST_ENTRIES = ("all queued", "first seats at once")


def burst_rows(n: int, seats: list[int], draws: int, settings: PreemptSettings, max_tokens: int) -> list[dict[str, object]]:
    cost, rows = build_cost(CPU_PROFILE), []
    plain_specs = ["fcfs", *dict.fromkeys(policy for _, policy, preempt in BURST_ARMS if not preempt)]
    preempt_specs = list(dict.fromkeys(policy for _, policy, preempt in BURST_ARMS if preempt))
    for n_seats, entry in itertools.product(seats, BURST_ENTRIES):
        config = EngineConfig(max_num_seqs=n_seats, max_tokens=max_tokens, **CPU_ENGINE)
        ratios: dict[str, list[float]] = {label: [] for label, _, _ in BURST_ARMS}
        preemptions: list[float] = []
        wasted: list[float] = []
        for draw in range(draws):
            w = build_workload("sharegpt", n, arrivals="burst", seed=draw, max_output=max_tokens)
            if entry != BURST_ENTRIES[0]:
                w = w.with_arrivals(np.where(np.arange(n) < n_seats, 0.0, 1e-6))
            plain = {r.arm.spec: r.metrics for r in run_arms(w, [Arm(s) for s in plain_specs], config, cost,
                                                               PREDICTIONS, seed=draw)}
            pre = {r.arm.spec: r.metrics for r in run_arms(w, [Arm(s) for s in preempt_specs],
                                                           replace(config, preempt=settings), cost, PREDICTIONS,
                                                           seed=draw)}  # fmt: skip
            for label, policy, preempt in BURST_ARMS:
                ratios[label].append((pre if preempt else plain)[policy]["mean_e2el_ms"] / plain["fcfs"]["mean_e2el_ms"])
            preemptions.append(pre[BURST_ARMS[0][1]]["preemptions"])
            wasted.append(pre[BURST_ARMS[0][1]]["resume_prefill_share"])
        row: dict[str, object] = {"seats": n_seats, "entry": entry, "prompts": n, "draws": draws,
                                  "preemptions": statistics.mean(preemptions), "wasted": statistics.mean(wasted)}
        for label, values in ratios.items():
            row[label] = (statistics.mean(values), min(values), max(values))
        rows.append(row)
        print(_burst_line(row), flush=True)
    return rows


BURST_HEADER = ("| seats | burst | " + " | ".join(f"{label} / FCFS" for label, _, _ in BURST_ARMS)
                + " | SRPT preemptions | SRPT resume prefill share |\n|---|---" + "|---" * (len(BURST_ARMS) + 2) + "|")


def _burst_line(r: dict[str, object]) -> str:
    cells = [f"{m:.3f} ({lo:.2f}–{hi:.2f})" for m, lo, hi in (r[label] for label, _, _ in BURST_ARMS)]  # type: ignore[misc]
    return f"| {r['seats']} | {r['entry']} | " + " | ".join(cells) + f" | {r['preemptions']:.1f} | {r['wasted']:.2%} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="azure,sharegpt")
    ap.add_argument("--seats", default="64,256")
    ap.add_argument("--loads", default="0.9,1.0,1.1")
    ap.add_argument("--policy", default=DEFAULT_POLICY)
    ap.add_argument("--preempt", default="", help="the gateway's --preempt spec (default: its defaults)")
    ap.add_argument("--sharegpt-n", type=int, default=8000, help="ShareGPT requests drawn")
    ap.add_argument("--azure-n", type=int, default=None, help="Azure requests (default: the whole trace)")
    ap.add_argument("--burst", type=int, default=40, help="burst size (0: no burst table)")
    ap.add_argument("--burst-seats", default="4,8")
    ap.add_argument("--burst-max-tokens", type=int, default=128)
    ap.add_argument("--draws", type=int, default=10, help="burst: draws of prompts and prediction noise")
    ap.add_argument("--skip-load", action="store_true", help="only the burst table")
    ap.add_argument("--out", type=Path, default=None, help="write the rows to OUT/sim_preempt-POLICY.json")
    args = ap.parse_args()
    settings = PreemptSettings.parse(args.preempt)
    print(f"gateway preemption {settings}; predictions {PREDICTIONS}; policy {args.policy}")
    out: dict[str, object] = {"settings": asdict(settings), "predictions": PREDICTIONS, "policy": args.policy}
    if not args.skip_load:
        print(f"\nH200 Llama-3-8B cost model; ratios over FCFS\n{LOAD_HEADER}", flush=True)
        out["load"] = load_rows(
            args.workloads.split(","), [int(s) for s in args.seats.split(",")],
            [float(x) for x in args.loads.split(",")], args.policy, settings, args.sharegpt_n, args.azure_n,
        )  # fmt: skip
    if args.burst:
        print(f"\nburst of {args.burst} ShareGPT dev prompts at t=0, max_tokens {args.burst_max_tokens}, CPU-engine "
              f"cost model ({CPU_PROFILE.name}); mean E2E over FCFS, mean (min–max) of {args.draws} draws\n{BURST_HEADER}",
              flush=True)  # fmt: skip
        out["burst"] = burst_rows(args.burst, [int(s) for s in args.burst_seats.split(",")], args.draws, settings,
                                  args.burst_max_tokens)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"sim_preempt-{args.policy}.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
