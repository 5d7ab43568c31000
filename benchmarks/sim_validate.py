"""Validate the simulator against the real engine: profile it, load it, replay the load in the simulator.

1. `lengthwise sim profile`: step times of the engine (decode batches, prefills) -> a linear cost model;
2. `lengthwise bench`: N real ShareGPT prompts at a Poisson rate, records saved;
3. the same arrival times, prompt and output lengths through the simulator (FCFS,
   the engine's max-num-seqs, 128-token blocks, a 2,048-token budget: vLLM CPU's defaults);
4. prints measured vs simulated metrics; target: mean E2E within 20%.

The engine must be otherwise idle (both the profile and the run assume it is
ours alone); the script waits up to --wait-s for it and says so if it never is.
Run: `.venv/bin/python benchmarks/sim_validate.py --url http://127.0.0.1:8100 --out /tmp/simval`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lengthwise.sim.cost import load_cost_model
from lengthwise.sim.engine import EngineConfig
from lengthwise.sim.validation import compare_to_measured


def engine_load(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("vllm:num_requests_running{", "vllm:num_requests_waiting{"))
    )


def wait_idle(url: str, wait_s: float) -> bool:
    deadline, quiet = time.time() + wait_s, 0
    while time.time() < deadline:
        quiet = quiet + 1 if engine_load(url) == 0 else 0
        if quiet >= 3:
            return True
        time.sleep(10)
    return False


def lengthwise(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("lengthwise")), *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8100")
    ap.add_argument("--out", type=Path, default=Path("sim-validation"))
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--rate", type=float, default=0.15, help="req/s of the measured run")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3,
                    help="profile repeats: single step times on 2 shared cores vary 3x, one repeat is not enough")
    ap.add_argument("--wait-s", type=float, default=600, help="how long to wait for an idle engine")
    ap.add_argument("--force", action="store_true", help="measure even if the engine is busy (the error will show it)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if not wait_idle(args.url, args.wait_s):
        print(f"the engine at {args.url} was never idle in {args.wait_s:.0f} s", flush=True)
        if not args.force:
            sys.exit(2)
    profile, run = args.out / "cpu-profile.json", args.out / "run.json"
    if not profile.exists():
        lengthwise("sim", "profile", "--url", args.url, "--max-num-seqs", str(args.max_num_seqs), "--repeats", str(args.repeats),
                   "--out", str(profile))  # fmt: skip
    lengthwise("bench", "--url", args.url, "--n", str(args.n), "--rate", str(args.rate), "--max-tokens",
               str(args.max_tokens), "--out", str(run))  # fmt: skip
    config = EngineConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=2048, block_size=128, num_blocks=682)
    report = compare_to_measured(run, load_cost_model(profile), config, "fcfs")
    print(f"\n{report['requests']} requests replayed; measured vs simulated:")
    for key, (measured, simulated) in report["metrics"].items():
        print(f"  {key:20s} {measured:10.1f} {simulated:10.1f}  {(simulated - measured) / measured:+.1%}")
    print(f"mean E2E error: {report['mean_e2el_error']:+.1%} (target within 20%)")
    (args.out / "validation.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
