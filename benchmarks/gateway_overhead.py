"""The gateway's own cost: added latency at a fixed rate, and the highest pass-through rate.

Starts the stub engine and `lengthwise serve` (constant predictor: no prediction cost)
as processes on loopback, then
1. latency: sends the same non-streaming chat request at a fixed rate (200 req/s by
   default) to the stub directly and through the gateway, in interleaved rounds
   (direct, gateway, gateway, direct ...), and prints p50/p99 of each and the added
   latency (gateway − direct, per percentile);
2. throughput: as many requests as `--concurrency` clients can push through the
   gateway (and directly, for reference) in `--seconds`.

Targets (issue 5): added p50 ≤ 1 ms, p99 ≤ 5 ms at 200 req/s; ≥ 1,000 req/s pass-through.
The machine is shared: run it when quiet, and read the round-to-round spread.

    python benchmarks/gateway_overhead.py [--rate 200] [--seconds 10] [--rounds 2] [--mode priority]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import aiohttp
import psutil
import uvloop

from gateway_common import free_port, process, running_stub

BODY = json.dumps({"model": "stub-model", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Write a haiku about queues. " * 8}]}).encode()
HEADERS = {"content-type": "application/json"}


async def _post(session: aiohttp.ClientSession, url: str) -> float:
    started = time.perf_counter()
    async with session.post(url, data=BODY, headers=HEADERS) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status} from {url}")
    return time.perf_counter() - started


async def fixed_rate(url: str, rate: float, seconds: float) -> list[float]:
    """Open loop: one request every 1/rate s, whatever the answers do."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for _ in range(20):
            await _post(session, url)  # warm up connections
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url)))
        return sorted(await asyncio.gather(*tasks))


async def max_rate(url: str, concurrency: int, seconds: float) -> float:
    """Closed loop: `concurrency` clients back to back; completed requests per second."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        deadline = time.perf_counter() + seconds
        done = 0

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _post(session, url)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return done / (time.perf_counter() - started)


def _pct(values: list[float], q: float) -> float:
    return 1e3 * values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="per latency round")
    parser.add_argument("--rounds", type=int, default=2, help="latency rounds (each: direct and gateway)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--throughput-seconds", type=float, default=10.0)
    parser.add_argument("--mode", default="priority", choices=["priority", "queue", "both"])
    args = parser.parse_args()

    with running_stub() as stub_url:
        port = free_port()
        gateway_url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--backend", stub_url, "--port", str(port),
               "--predictor", "constant:tokens=16", "--mode", args.mode, "--max-inflight", "1000",
               "--log-level", "warning"]
        with process(cmd, f"{gateway_url}/health") as gateway_proc:
            urls = {"direct": f"{stub_url}/v1/chat/completions", "gateway": f"{gateway_url}/v1/chat/completions"}
            print(f"latency at {args.rate:g} req/s, {args.seconds:g} s per run, gateway mode {args.mode}:")
            print(f"{'round':>5} {'path':8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'mean ms':>8}")
            results: dict[str, list[list[float]]] = {"direct": [], "gateway": []}
            for rnd in range(args.rounds):
                order = ("direct", "gateway") if rnd % 2 == 0 else ("gateway", "direct")
                for path in order:
                    lat = uvloop.run(fixed_rate(urls[path], args.rate, args.seconds))
                    results[path].append(lat)
                    print(f"{rnd + 1:>5} {path:8} {_pct(lat, .5):7.3f} {_pct(lat, .9):7.3f} {_pct(lat, .99):7.3f} "
                          f"{1e3 * statistics.fmean(lat):8.3f}")
            print("added by the gateway (gateway − direct, same round):")
            for rnd in range(args.rounds):
                d, g = results["direct"][rnd], results["gateway"][rnd]
                print(f"  round {rnd + 1}: p50 {_pct(g, .5) - _pct(d, .5):+.3f} ms, "
                      f"p99 {_pct(g, .99) - _pct(d, .99):+.3f} ms")
            print(f"pass-through rate, {args.concurrency} concurrent clients, {args.throughput_seconds:g} s:")
            gateway_cpu = psutil.Process(gateway_proc.pid)
            for path in ("gateway", "direct"):
                before = gateway_cpu.cpu_times()
                rate = uvloop.run(max_rate(urls[path], args.concurrency, args.throughput_seconds))
                line = f"  {path:8} {rate:8.0f} req/s"
                if path == "gateway":
                    after, n = gateway_cpu.cpu_times(), rate * args.throughput_seconds
                    line += (f"   gateway CPU per request: {1e6 * (after.user - before.user) / n:.0f} us user + "
                             f"{1e6 * (after.system - before.system) / n:.0f} us system")
                print(line)


if __name__ == "__main__":
    main()
