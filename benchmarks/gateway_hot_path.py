"""What prediction costs the request path: the gateway with its default predictor against the stub engine.

Starts the stub engine and one `lengthwise serve` per arm (by default: the default
predictor, and `constant:tokens=16`, which costs nothing) as processes on loopback, then,
in rounds whose order rotates (direct, arms ...):
1. burst: `--clients` concurrent streaming chat requests, each with its own prompt; the
   wall time of the whole burst, directly and through each gateway, and their ratio;
2. one at a time: `--sequential` requests back to back; a gateway's added latency is
   gateway − direct per percentile (p50, p99), in the same round;
3. big prompt (once per path): small requests at `--rate` per second while one request
   carries a `--big-mb` MB prompt (8: under the 8 MiB body limit); how much longer the
   small ones took while the big one was on its way (their worst latency minus their
   median before it), and the gateway's RSS before, at its peak and 2 s after.
Each gateway's CPU seconds per request (from its /metrics) are printed for each phase.

Targets (issue 14 item 3, issue 15 item 1): burst ≤ 1.2× direct; added p50 ≤ 2 ms,
p99 ≤ 10 ms; the big prompt delays small requests by ≤ 100 ms; RSS back within 10%.
Stub, gateways and load share whatever cores they are given: pin them to one core to
keep an engine's cores free, and read the round-to-round spread. `--gateway-cpus` gives
the gateways cores of their own (the stub and the load generator keep the script's), so
that the direct path and the gateway path run the same stub and load on the same core and
differ only by the gateway:

    nice -n 19 taskset -c 0 python benchmarks/gateway_hot_path.py [--clients 500] [--rounds 3] [--gateway-cpus 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import time

import aiohttp
import psutil
import uvloop

from gateway_common import free_port, process, running_stub

from lengthwise.bench.services import GatewayCpu, cpu_per_request, gateway_cpu

TOPICS = ("queues", "a haiku", "the history of Rome", "Rust lifetimes", "sourdough bread", "tides",
          "binary search", "jazz harmony", "photosynthesis", "a cover letter for a barista job")


JSON = {"content-type": "application/json"}


def _chat(i: int, tokens: int, *, stream: bool = True, text: str | None = None) -> dict:
    content = text if text is not None else f"Request {i}: tell me about {TOPICS[i % len(TOPICS)]}, please."
    return {"model": "stub-model", "stream": stream, "max_tokens": tokens,
            "messages": [{"role": "user", "content": content}]}


async def _one(session: aiohttp.ClientSession, url: str, body: dict | bytes) -> float:
    """Seconds until the whole answer was read; `body` bytes are sent as they are (encoded beforehand)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    started = time.perf_counter()
    async with session.post(url + "/v1/chat/completions", data=data, headers=JSON) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status} from {url}")
    return time.perf_counter() - started


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300))


async def burst(url: str, clients: int, tokens: int, offset: int) -> float:
    """Wall seconds for `clients` concurrent streams (prompts numbered from `offset`: no two rounds repeat one)."""
    async with _session() as session:
        await asyncio.gather(*(_one(session, url, _chat(offset + i, tokens)) for i in range(20)))  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(_one(session, url, _chat(offset + i, tokens)) for i in range(clients)))
        return time.perf_counter() - started


async def sequential(url: str, n: int, tokens: int, offset: int) -> list[float]:
    """Latencies of `n` requests sent one after another (each when the previous one has ended)."""
    async with _session() as session:
        for i in range(10):
            await _one(session, url, _chat(offset + i, tokens, stream=False))
        return sorted([await _one(session, url, _chat(offset + i, tokens, stream=False)) for i in range(n)])


async def big_prompt(url: str, megabytes: float, rate: float, seconds: float, tokens: int,
                     proc: psutil.Process | None) -> dict:
    """Small requests at `rate`/s for `seconds`; one big prompt sent a third of the way in."""
    size = int(megabytes * 1e6)  # 8 MB: under the gateway's 8 MiB body limit
    text = ("All work and no play makes Jack a dull boy. " * (size // 44 + 1))[:size]
    big = json.dumps(_chat(-1, tokens, stream=False, text=text)).encode()  # not encoded while the clock runs
    rss: list[float] = []
    small: list[tuple[float, float]] = []  # (sent at, latency)

    async def watch_rss() -> None:
        while proc is not None:
            rss.append(proc.memory_info().rss / 2**20)
            await asyncio.sleep(0.05)

    async with _session() as session:
        for i in range(10):
            await _one(session, url, _chat(i, tokens, stream=False))
        start = time.perf_counter()
        watcher = asyncio.create_task(watch_rss())
        await asyncio.sleep(0.2)
        rss_before = rss[-1] if rss else 0.0

        async def timed(i: int) -> None:
            sent = time.perf_counter() - start
            small.append((sent, await _one(session, url, _chat(i, tokens, stream=False))))

        tasks, big_task, big_at = [], None, seconds / 3
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if big_task is None and time.perf_counter() - start >= big_at:
                big_task = asyncio.create_task(_one(session, url, big))
            tasks.append(asyncio.create_task(timed(i)))
        await asyncio.gather(*tasks)
        big_s = await big_task if big_task is not None else float("nan")
        await asyncio.sleep(2.0)  # let the gateway settle before the last RSS reading
        watcher.cancel()
    before = [lat for sent, lat in small if sent < big_at]
    during = [lat for sent, lat in small if big_at <= sent <= big_at + big_s + 0.1]
    baseline = statistics.median(before)
    return {"big_s": round(big_s, 3), "small_p50_before_ms": round(1e3 * baseline, 1),
            "small_worst_during_ms": round(1e3 * max(during, default=baseline), 1),
            "delay_ms": round(1e3 * (max(during, default=baseline) - baseline), 1),
            "rss_mib": {"before": round(rss_before, 1), "peak": round(max(rss, default=0.0), 1),
                        "after": round(rss[-1] if rss else 0.0, 1)}}


def _cpu_since(url: str | None, before: GatewayCpu | None) -> str:
    per = cpu_per_request(before, gateway_cpu(url)) if url else None
    return "" if per is None else f"  gateway CPU {1e3 * per:.2f} ms/request"


def _ms(values: list[float], q: float) -> float:
    return 1e3 * values[min(len(values) - 1, int(q * len(values)))]


def _gateway(stub_url: str, port: int, predictor: str | None, args: argparse.Namespace) -> list[str]:
    pinned = ["taskset", "-c", args.gateway_cpus] if args.gateway_cpus else []
    cmd = [*pinned, sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--backend", stub_url,
           "--port", str(port), "--mode", args.mode, "--log-level", "warning", *args.gateway_flag]
    return cmd + (["--predictor", predictor] if predictor else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500, help="concurrent streams per burst")
    parser.add_argument("--tokens", type=int, default=16,
                        help="tokens per answer, the same for every request: the stub's lengths then carry no "
                             "signal, and `auto` keeps its choice 'none' throughout")
    parser.add_argument("--sequential", type=int, default=300, help="requests one at a time, per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=float, default=8.0, help="size of the big prompt (0: skip)")
    parser.add_argument("--rate", type=float, default=50.0, help="small requests per second around the big one")
    parser.add_argument("--arm", action="append", default=None, metavar="NAME=PREDICTOR",
                        help="a gateway to measure, with its --predictor ('default=' for the default); "
                             "default: default= and constant=constant:tokens=16")
    parser.add_argument("--mode", default="priority", choices=["priority", "queue", "both"])
    parser.add_argument("--gateway-flag", action="append", default=[], help="extra flag for `lengthwise serve`")
    parser.add_argument("--gateway-cpus", default="",
                        help="CPUs for the gateways (taskset list, e.g. 1); default: those this script runs on, "
                             "which the stub and the load generator keep")
    args = parser.parse_args()
    arms = dict(arm.partition("=")[::2] for arm in args.arm or ["default=", "constant=constant:tokens=16"])

    with running_stub() as stub_url, contextlib.ExitStack() as stack:
        urls, procs = {"direct": stub_url}, {}
        for name, predictor in arms.items():
            port = free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            procs[name] = stack.enter_context(process(_gateway(stub_url, port, predictor or None, args),
                                                      f"{urls[name]}/health"))
        gateways = {name: url for name, url in urls.items() if name != "direct"}
        print(f"mode {args.mode}; arms: " + ", ".join(f"{n} ({p or 'default predictor'})" for n, p in arms.items()))
        print(f"stub and load on CPUs {sorted(os.sched_getaffinity(0))}, gateways on "
              f"{args.gateway_cpus or 'the same'}; load average {_load()}")
        paths = list(urls)
        walls: dict[str, list[float]] = {path: [] for path in paths}
        lats: dict[str, list[list[float]]] = {path: [] for path in paths}
        for rnd in range(args.rounds):
            order = paths[rnd % len(paths):] + paths[: rnd % len(paths)]
            for path in order:
                mark = gateway_cpu(gateways[path]) if path in gateways else None
                walls[path].append(uvloop.run(burst(urls[path], args.clients, args.tokens, rnd * args.clients)))
                print(f"round {rnd + 1} burst      {path:9} {walls[path][-1]:7.3f} s{_cpu_since(gateways.get(path), mark)}")
            for path in order:
                mark = gateway_cpu(gateways[path]) if path in gateways else None
                lat = uvloop.run(sequential(urls[path], args.sequential, args.tokens, 10**6 + rnd * args.sequential))
                lats[path].append(lat)
                print(f"round {rnd + 1} sequential {path:9} p50 {_ms(lat, .5):6.2f} ms  p99 {_ms(lat, .99):6.2f} ms"
                      f"{_cpu_since(gateways.get(path), mark)}")
        print("summary (each round against its own direct run):")
        for name in gateways:
            for rnd in range(args.rounds):
                d, g = lats["direct"][rnd], lats[name][rnd]
                print(f"  {name:9} round {rnd + 1}: burst {walls[name][rnd] / walls['direct'][rnd]:.2f}x direct "
                      f"({walls[name][rnd]:.2f} s vs {walls['direct'][rnd]:.2f} s); one at a time added "
                      f"p50 {_ms(g, .5) - _ms(d, .5):+.2f} ms, p99 {_ms(g, .99) - _ms(d, .99):+.2f} ms")
        if args.big_mb > 0:
            for path in paths:
                mark = gateway_cpu(gateways[path]) if path in gateways else None
                proc = psutil.Process(procs[path].pid) if path in procs else None
                report = uvloop.run(big_prompt(urls[path], args.big_mb, args.rate, 6.0, args.tokens, proc))
                print(f"big prompt ({args.big_mb:g} MB) {path:9} {json.dumps(report)}{_cpu_since(gateways.get(path), mark)}")
        print(f"load average at the end {_load()}")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
