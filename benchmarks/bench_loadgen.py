"""How faithful is the load generator? Send lateness and measured TTFT against the stub engine.

A benchmark client must keep its schedule and measure what the server does, not
itself. This replays Poisson arrivals at a high rate against the stub engine
(a separate process, fixed first-byte latency and token interval) and prints:
how late each request left against its planned arrival (p50/p99/max), the
achieved rate, and the TTFT and ITL the client measured against the stub's
configured values.

    .venv/bin/python benchmarks/bench_loadgen.py --rate 200 --n 2000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

from lengthwise.bench.loadgen import Target, replay
from lengthwise.core.records import summarize
from lengthwise.bench.plan import build_plan, poisson_gamma_arrivals
from lengthwise.bench.services import free_port, running_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="arrivals per second")
    parser.add_argument("--n", type=int, default=2000, help="requests")
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per request")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="stub's delay before the first byte")
    parser.add_argument("--token-interval-ms", type=float, default=5.0, help="stub's delay between tokens")
    args = parser.parse_args()

    port = free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(port),
            "--latency-ms", str(args.latency_ms), "--token-interval-ms", str(args.token_interval_ms)]  # fmt: skip
    arrivals = poisson_gamma_arrivals(args.n, args.rate, seed=0)
    plan = build_plan(["benchmark prompt"] * args.n, arrivals, args.tokens)
    with running_server(stub, f"http://127.0.0.1:{port}", log=Path(tempfile.mkdtemp(prefix="bench_loadgen_")) / "stub.log", start_timeout_s=60) as url:
        records = asyncio.run(replay(plan, Target(url, "stub-model"), progress=False))

    lateness_ms = np.array([(r.arrival - p.arrival_s) * 1000 for r, p in zip(records, plan, strict=True)])
    s = summarize(records)
    print(f"requests {args.n} at {args.rate:g} req/s planned; {int(s['completed'])} completed, {int(s['failed'])} failed")
    print(f"achieved arrival rate: {(args.n - 1) / (max(r.arrival for r in records) - min(r.arrival for r in records)):.1f} req/s")
    print(f"send lateness ms: p50 {np.median(lateness_ms):.2f}  p99 {np.percentile(lateness_ms, 99):.2f}  max {lateness_ms.max():.2f}")
    print(f"TTFT ms (stub first byte {args.latency_ms:g} + 1 token): median {s['median_ttft_ms']:.2f}  p99 {s['p99_ttft_ms']:.2f}")
    print(f"ITL ms (stub {args.token_interval_ms:g}): median {s['median_itl_ms']:.2f}  p99 {s['p99_itl_ms']:.2f}")


if __name__ == "__main__":
    main()
