"""Scheduling gain of each predictor in `lengthwise predict learned compare`, through the simulator.

For each method's replay JSONL (held-out predictions with the embedded model's
actual lengths), `lengthwise sim run --predictions replay:FILE` schedules the
ShareGPT dev workload shortest-predicted-first; FCFS and SJF on the true lengths
(oracle) run on the same arrivals. The workload's outputs are capped at the
records' longest (the eval's max_tokens), one cap for every run, so that all
arms serve the same requests. Seeds change the arrivals and the replay draws;
the table shows mean E2E relative to FCFS, mean and spread over seeds, and
Kendall's tau of the replayed predictions against the simulated lengths (what
SJF was told, on the workload's length mix rather than the eval's).

    python benchmarks/learned_sim.py --seeds 5 --n 2000 --load 0.9 --max-num-seqs 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lengthwise.sim.experiment import build_workload
from lengthwise.sim.predictions import make_predictions, output_cap, sampled_kendall_tau

REPLAY = Path(__file__).resolve().parents[1] / "docs/results/learned/replay"


def simulate(policies: list[str], predictions: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Mean E2E (s) per policy arm for one seed."""
    with tempfile.TemporaryDirectory() as tmp:
        save = Path(tmp) / "run"
        command = [
            str(Path(sys.executable).with_name("lengthwise")), "sim", "run", "--workload", "sharegpt", "--n", str(args.n),
            "--load", str(args.load), "--max-num-seqs", str(args.max_num_seqs), "--predictions", predictions,
            "--seed", str(seed), "--no-buckets", "--save", str(save),
        ]
        for policy in policies:
            command += ["--policy", policy]
        subprocess.run(command, check=True, capture_output=True)
        metrics = json.loads(save.read_text())
    return {arm: m["mean_e2el_ms"] / 1000 for arm, m in metrics.items() if arm != "config"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--max-num-seqs", type=int, default=8)
    parser.add_argument("--policy", default="sjf", help="policy that uses the predictions")
    parser.add_argument("--replay", type=Path, default=REPLAY, help="replay/ folder written by compare")
    parser.add_argument("--out", type=Path, help="default: sim.json next to the replay folder")
    args = parser.parse_args()
    args.out = args.out or args.replay.parent / "sim.json"
    methods = json.loads((args.replay / "index.json").read_text())
    first = next(iter(methods))
    cap = output_cap(f"replay:{args.replay / f'{first}.jsonl'}")
    specs = {key: f"replay:{args.replay / f'{key}.jsonl'},cap={cap}" for key in methods}
    base = [simulate(["fcfs", f"{args.policy}@oracle"], specs[first], s, args) for s in range(args.seeds)]
    fcfs = np.array([b["fcfs"] for b in base])
    rows = {f"{args.policy} on the true lengths (oracle)": np.array([b[f"{args.policy}@oracle"] for b in base])}
    taus: dict[str, np.ndarray] = {}
    outputs = [build_workload("sharegpt", args.n, seed=s, max_output=cap).output_tokens for s in range(args.seeds)]
    for key, name in methods.items():
        runs = [simulate([args.policy], specs[key], s, args) for s in range(args.seeds)]
        rows[name] = np.array([r[args.policy] for r in runs])
        taus[name] = np.array([sampled_kendall_tau(make_predictions(specs[key], out, s), out) for s, out in enumerate(outputs)])
    print(f"ShareGPT dev workload, n={args.n}, outputs capped at {cap} tokens, load {args.load}, "
          f"max-num-seqs {args.max_num_seqs}, H200 profile, {args.seeds} seeds; FCFS mean E2E {fcfs.mean():.3f} s")
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"output_cap": cap}
    result = {"config": config, "fcfs_mean_e2e_s": fcfs.tolist(), "rows": {}}
    for name, values in rows.items():
        ratio = values / fcfs
        result["rows"][name] = {"mean_e2e_s": values.tolist(), "ratio_to_fcfs": ratio.tolist()}
        line = f"{name:60s} mean E2E / FCFS {ratio.mean():.3f} ± {ratio.std():.3f}"
        if name in taus:
            result["rows"][name]["replayed_tau"] = taus[name].tolist()
            line += f"; tau of replayed predictions {taus[name].mean():.3f}"
        print(line)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
