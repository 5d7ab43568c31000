"""Load reliability: many concurrent streaming clients through the gateway lose nothing.

Starts the stub engine and `lengthwise serve` (`--mode`, queue by default; `--predictor`,
a constant one by default) as processes on loopback, then
1. `--clients` concurrent streaming chat requests, `--rounds` times: every request must
   get exactly one complete stream (its tokens, then `data: [DONE]`) or one clear error;
   request ids (the gateway's `x-lengthwise-request-id`, the engine's stream id) must be
   unique, and each stream must carry one engine id only (no mixed-up streams);
   the gateway's RSS is read after a warm-up and after each round;
2. (queue mode) a burst of `--clients` requests against a gateway with a small queue
   (`--burst-queue`): each one is a complete stream or a 429 with Retry-After, and none hangs;
3. slowloris: `--stalled` connections that send half a request (half of them part of the
   headers, half the headers and part of a body) and then nothing, against a gateway with
   `--header-timeout` and `--body-timeout` of `--slow-timeout` s: each must be answered 408
   and closed within the timeout (plus `--slow-grace`), while `--normal-clients` streams
   run; their latency is compared with the same round without stalled connections.

    python benchmarks/reliability_load.py [--clients 1000] [--rounds 3] [--tokens 16] [--stalled 1500]
        [--mode priority] [--predictor default]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import sys
import time
from dataclasses import dataclass

import aiohttp
import psutil
import uvloop

from gateway_common import free_port, process, running_stub

from lengthwise.core.headers import REQUEST_ID


@dataclass
class Outcome:
    status: int
    gateway_id: str | None
    stream_ids: set[str]
    tokens: int
    done: bool
    retry_after: str | None
    error: str | None
    seconds: float


async def _one(session: aiohttp.ClientSession, url: str, i: int, tokens: int) -> Outcome:
    body = {"model": "stub-model", "stream": True, "max_tokens": tokens, "user": f"client-{i}",
            "messages": [{"role": "user", "content": f"client {i}: tell me about queues"}]}
    started = time.perf_counter()
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as r:
            if r.status != 200:
                text = await r.text()
                return Outcome(r.status, r.headers.get(REQUEST_ID), set(), 0, False,
                               r.headers.get("retry-after"), json.loads(text)["error"]["message"],
                               time.perf_counter() - started)
            raw = await r.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        return Outcome(-1, None, set(), 0, False, None, f"{type(e).__name__}: {e}", time.perf_counter() - started)
    ids, count, done, error = set(), 0, False, None
    for line in raw.decode().split("\n\n"):
        data = line.removeprefix("data: ").strip()
        if not data:
            continue
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            error = event["error"]["message"]
            continue
        ids.add(event["id"])
        count += sum(1 for c in event["choices"] if c.get("delta", {}).get("content"))
    return Outcome(200, r.headers.get(REQUEST_ID), ids, count, done, None, error,
                   time.perf_counter() - started)


async def _round(url: str, clients: int, tokens: int, timeout_s: float) -> list[Outcome]:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        return await asyncio.gather(*(_one(session, url, i, tokens) for i in range(clients)))


def _check(outcomes: list[Outcome], tokens: int) -> dict[str, object]:
    """What a round proves: counts by kind, and every violation of exactly-once found."""
    complete = [o for o in outcomes if o.status == 200 and o.done and o.error is None and o.tokens == tokens
                and len(o.stream_ids) == 1]
    errors = collections.Counter(o.status for o in outcomes if o not in complete)
    gateway_ids = [o.gateway_id for o in outcomes if o.gateway_id]
    stream_ids = [i for o in outcomes for i in o.stream_ids]
    no_retry_after = sum(1 for o in outcomes if o.status == 429 and not o.retry_after)
    latencies = sorted(o.seconds for o in outcomes)
    return {
        "requests": len(outcomes), "complete": len(complete), "other": dict(errors),
        "duplicate_gateway_ids": len(gateway_ids) - len(set(gateway_ids)),
        "duplicate_stream_ids": len(stream_ids) - len(set(stream_ids)),
        "missing_gateway_id": sum(1 for o in outcomes if o.status in (200, 429) and not o.gateway_id),
        "429_without_retry_after": no_retry_after,
        "p50_s": round(latencies[len(latencies) // 2], 3), "max_s": round(latencies[-1], 3),
        "sample_errors": sorted({o.error for o in outcomes if o.error})[:3],
    }


def _half_a_request(i: int) -> bytes:
    """Part of the headers (odd i), or the headers and part of a body (even i)."""
    if i % 2:
        return b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-ty"
    body = json.dumps({"model": "stub-model", "messages": [{"role": "user", "content": f"stalled {i}"}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)) + body[: len(body) // 2]


async def _stall(port: int, i: int, give_up_s: float) -> tuple[float, int | None]:
    """One stalled connection: seconds until the gateway closed it, and the status it answered (None: none)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    try:
        writer.write(_half_a_request(i))
        raw = await asyncio.wait_for(reader.read(), give_up_s)
    except TimeoutError:
        return give_up_s, None
    finally:
        writer.close()
    return time.perf_counter() - started, int(raw.split()[1]) if raw.startswith(b"HTTP/1.1 ") else None


async def _slowloris(stub_url: str, args: argparse.Namespace) -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    timeout = str(args.slow_timeout)
    with process(_gateway(stub_url, port, args, ("--max-inflight", "256", "--max-queue", str(args.clients)),
                          ("--header-timeout", timeout, "--body-timeout", timeout)), url + "/health"):
        await _round(url, 50, args.tokens, args.timeout)  # warm-up
        baseline = _check(await _round(url, args.normal_clients, args.tokens, args.timeout), args.tokens)
        give_up_s = args.slow_timeout + args.slow_grace
        stalled = asyncio.gather(*(_stall(port, i, give_up_s) for i in range(args.stalled)))
        await asyncio.sleep(min(1.0, args.slow_timeout / 2))  # they are all open and silent
        during = _check(await _round(url, args.normal_clients, args.tokens, args.timeout), args.tokens)
        closed = await stalled
    statuses = collections.Counter(status for _, status in closed)
    slowest = max(seconds for seconds, _ in closed)
    print(f"slowloris: {args.stalled} stalled connections, timeouts {timeout} s: statuses {dict(statuses)}, "
          f"all closed after {slowest:.1f} s at most")
    print(f"  {args.normal_clients} streams alone: p50 {baseline['p50_s']} s, max {baseline['max_s']} s; "
          f"with the stalled connections: p50 {during['p50_s']} s, max {during['max_s']} s")
    print("  " + json.dumps(during))
    return int(statuses.get(408, 0) != args.stalled or slowest >= give_up_s
               or during["complete"] != args.normal_clients)


def _raise_file_limit() -> None:
    """Thousands of sockets (here and, inherited, in the gateway): the soft limit is often 1024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _gateway(stub_url: str, port: int, args: argparse.Namespace, queue_flags: tuple[str, ...] = (),
             flags: tuple[str, ...] = ()) -> list[str]:
    """The gateway's command line; `queue_flags` apply in queue mode only."""
    predictor = [] if args.predictor == "default" else ["--predictor", args.predictor]
    return [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--backend", stub_url, "--port", str(port),
            "--mode", args.mode, *predictor, "--log-level", "warning", *flags,
            *(queue_flags if args.mode == "queue" else ())]


async def _burst(stub_url: str, args: argparse.Namespace) -> int:
    """Every request of a burst over a small queue is a complete stream or a 429 with Retry-After."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(_gateway(stub_url, port, args, ("--max-inflight", "8", "--max-queue", str(args.burst_queue))),
                 url + "/health"):
        started = time.perf_counter()
        outcomes = await _round(url, args.clients, args.tokens, args.timeout)
        wall = time.perf_counter() - started
    report = _check(outcomes, args.tokens)
    print(f"burst: {args.clients} streams at once, max_queue {args.burst_queue}, max_inflight 8: {wall:.1f} s")
    print("  " + json.dumps(report))
    accounted = report["complete"] + report["other"].get(429, 0)  # type: ignore[union-attr]
    return int(accounted != args.clients or bool(report["429_without_retry_after"])
               or bool(report["duplicate_gateway_ids"]) or bool(report["duplicate_stream_ids"]))


async def main(args: argparse.Namespace) -> int:
    _raise_file_limit()
    failures = 0
    with running_stub("--token-interval-ms", str(args.token_interval_ms)) as stub_url:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with process(_gateway(stub_url, port, args, ("--max-inflight", str(args.max_inflight), "--max-queue",
                                                     str(args.clients))), url + "/health") as gw:
            rss = psutil.Process(gw.pid)
            await _round(url, 50, args.tokens, args.timeout)  # warm-up: imports, connection pools
            print(f"gateway RSS after warm-up: {rss.memory_info().rss / 2**20:.1f} MiB")
            for n in range(args.rounds):
                started = time.perf_counter()
                outcomes = await _round(url, args.clients, args.tokens, args.timeout)
                wall = time.perf_counter() - started
                report = _check(outcomes, args.tokens)
                print(f"round {n + 1}: {args.clients} concurrent streams in {wall:.1f} s "
                      f"({args.clients / wall:.0f} req/s); gateway RSS {rss.memory_info().rss / 2**20:.1f} MiB")
                print("  " + json.dumps(report))
                failures += report["complete"] != args.clients or report["duplicate_gateway_ids"] \
                    or report["duplicate_stream_ids"] or report["missing_gateway_id"]
        if args.mode == "queue":
            failures += await _burst(stub_url, args)
        if args.stalled:
            failures += await _slowloris(stub_url, args)
    print("OK: nothing lost, nothing duplicated, stalled clients closed" if not failures else f"FAILED checks: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--mode", choices=("queue", "priority"), default="queue", help="the gateway's mode")
    parser.add_argument("--predictor", default="constant:tokens=16", help="a predictor spec, or 'default'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16, help="streamed tokens per request")
    parser.add_argument("--token-interval-ms", type=float, default=5.0, help="the stub's delay between tokens")
    parser.add_argument("--max-inflight", type=int, default=256, help="the gateway's slots per backend")
    parser.add_argument("--burst-queue", type=int, default=100, help="max_queue of the burst phase")
    parser.add_argument("--timeout", type=float, default=300.0, help="a client gives up after this many s")
    parser.add_argument("--stalled", type=int, default=1500, help="slowloris connections (0: skip that phase)")
    parser.add_argument("--slow-timeout", type=float, default=5.0, help="the gateway's header and body timeouts")
    parser.add_argument("--slow-grace", type=float, default=5.0, help="seconds past the timeout a close may take")
    parser.add_argument("--normal-clients", type=int, default=100, help="streams run beside the stalled ones")
    sys.exit(uvloop.run(main(parser.parse_args())))
