"""What sharing the queue through Redis costs: added latency per request, and requests/s of 1-4 replicas.

Starts a real redis-server (Debian's, `make redis`), stub engines and `lengthwise serve --mode queue`
(constant predictor: no prediction cost) as processes on loopback, then
1. latency: the same non-streaming request, one at a time (`--requests` per round: no pile-up on a
   busy core), through a gateway with its local queue and through one with `--redis`, in
   interleaved rounds, with seats enough that nothing waits (every request still takes and gives
   back a seat: one script call each way); prints p50/p99 of each and Redis − local per
   percentile, and the CPU seconds per request of the gateway and of redis-server (which a busy
   machine does not inflate as it does wall-clock latency);
2. throughput: `--concurrency` clients back to back, spread over 1, 2, 3 and 4 replicas sharing
   Redis in front of 2 stubs with `--seats` seats each (fewer than the clients: requests queue,
   and grants cross replicas); prints requests/s per replica count.

Everything (client, gateways, stubs, Redis) runs where it is started: on this project's 2-core
machine, run it on one core beside the engine's, as docs/SCALE_OUT.md did:

    cd benchmarks && nice -n 19 taskset -c 0 ../.venv/bin/python redis_queue.py [--requests 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator

import aiohttp
import uvloop

import redis as redis_client
from gateway_common import free_port, process, running_stub
from gateway_overhead import _pct, _post
from lengthwise.bench.services import cpu_per_request, gateway_cpu
from lengthwise.testing.redis_server import RedisServer


@contextlib.contextmanager
def gateways(n: int, backends: list[str], seats: int, redis_url: str | None) -> Iterator[list[str]]:
    """`n` queue-mode gateways in front of `backends` (sharing `redis_url` if given); yields their chat URLs."""
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(n):
            port = free_port()
            cmd = [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--port", str(port),
                   "--engine", "openai", "--mode", "queue", "--max-inflight", str(seats), "--max-queue", "100000",
                   "--predictor", "constant:tokens=1", "--log-level", "warning"]
            cmd += [arg for b in backends for arg in ("--backend", b)]
            cmd += ["--redis", redis_url] if redis_url else []
            stack.enter_context(process(cmd, f"http://127.0.0.1:{port}/health"))
            urls.append(f"http://127.0.0.1:{port}/v1/chat/completions")
        time.sleep(1.0)  # the first heartbeat: on the shared queue
        yield urls


async def one_at_a_time(url: str, n: int) -> list[float]:
    """Latency of `n` requests sent one after the other (after a few to warm the connection up)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            await _post(session, url)
        return [await _post(session, url) for _ in range(n)]


def redis_cpu_s(url: str) -> float:
    """redis-server's CPU seconds so far (user + system)."""
    info = redis_client.Redis.from_url(url).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def closed_loop(urls: list[str], concurrency: int, seconds: float) -> float:
    """`concurrency` clients back to back, client i on replica i mod n; completed requests per second."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for url in urls:
            await _post(session, url)  # warm up
        deadline = time.perf_counter() + seconds
        done = 0

        async def client(url: str) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await _post(session, url)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(concurrency)))
        return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="Requests per latency round.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved latency rounds per arm.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds per throughput run.")
    parser.add_argument("--concurrency", type=int, default=32, help="Closed-loop clients of the throughput runs.")
    parser.add_argument("--seats", type=int, default=4, help="Seats per stub in the throughput runs.")
    parser.add_argument("--replicas", type=int, default=4, help="Throughput of 1..this many replicas.")
    args = parser.parse_args()

    with RedisServer() as redis, running_stub() as stub_a, running_stub() as stub_b:
        print(f"1. added latency: {args.requests} requests one at a time per round, {args.rounds} round(s) per arm")
        latencies: dict[str, list[float]] = {"local": [], "redis": []}
        cpu: dict[str, float | None] = {}
        with gateways(1, [stub_a], 1000, None) as (local,), gateways(1, [stub_a], 1000, redis.url) as (shared,):
            urls = {"local": local, "redis": shared}
            before = {arm: gateway_cpu(url.removesuffix("/v1/chat/completions")) for arm, url in urls.items()}
            redis_before = redis_cpu_s(redis.url)
            for i in range(args.rounds):
                for arm in ("local", "redis") if i % 2 == 0 else ("redis", "local"):
                    latencies[arm] += uvloop.run(one_at_a_time(urls[arm], args.requests))
            redis_cpu = (redis_cpu_s(redis.url) - redis_before) / (args.rounds * (args.requests + 5))
            for arm, url in urls.items():
                cpu[arm] = cpu_per_request(before[arm], gateway_cpu(url.removesuffix("/v1/chat/completions")))
        print(f"{'queue':<8} {'p50 ms':>8} {'p99 ms':>8} {'gateway CPU ms/req':>19}")
        for arm, values in latencies.items():
            values.sort()
            used = cpu[arm]
            print(f"{arm:<8} {_pct(values, 0.5):8.2f} {_pct(values, 0.99):8.2f} "
                  f"{'?' if used is None else f'{used * 1e3:.2f}':>19}")
        local_s, shared_s = sorted(latencies["local"]), sorted(latencies["redis"])
        print(f"{'added':<8} {_pct(shared_s, 0.5) - _pct(local_s, 0.5):8.2f} "
              f"{_pct(shared_s, 0.99) - _pct(local_s, 0.99):8.2f}")
        print(f"redis-server CPU per request: {redis_cpu * 1e3:.3f} ms")

        print(f"\n2. requests/s, {args.concurrency} closed-loop clients, 2 stubs × {args.seats} seats, "
              f"{args.seconds:g} s per run")
        print(f"{'replicas':>8} {'req/s':>8}")
        for n in range(1, args.replicas + 1):
            with gateways(n, [stub_a, stub_b], args.seats, redis.url) as urls:
                rate = uvloop.run(closed_loop(urls, args.concurrency, args.seconds))
            print(f"{n:>8} {rate:8.0f}")


if __name__ == "__main__":
    main()
