"""Which HTTP client should the gateway forward with? httpx vs aiohttp, measured.

Starts the stub engine in a subprocess and sends it the same requests through each
client (httpx; httpx over aiohttp's transport, as the gateway's predictors query the
engine; aiohttp), one at a time (latency) and 32 at a time (client CPU per request),
plain and streaming. Prints a table; the gateway uses the client with the lower cost.

    python benchmarks/gateway_http_clients.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import uvloop
from httpx_aiohttp import AiohttpTransport

from gateway_common import running_stub

BODY = json.dumps({"model": "stub-model", "max_tokens": 8,
                   "messages": [{"role": "user", "content": "hello " * 60}]}).encode()
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()
HEADERS = {"content-type": "application/json"}

Send = Callable[[bytes], Awaitable[int]]


def httpx_sender(client: httpx.AsyncClient, url: str) -> Send:
    async def send(body: bytes) -> int:
        async with client.stream("POST", url, content=body, headers=HEADERS) as r:
            n = 0
            async for chunk in r.aiter_raw():
                n += len(chunk)
            return n
    return send


def aiohttp_sender(session: aiohttp.ClientSession, url: str) -> Send:
    async def send(body: bytes) -> int:
        async with session.post(url, data=body, headers=HEADERS) as r:
            n = 0
            async for chunk in r.content.iter_any():
                n += len(chunk)
            return n
    return send


async def measure(send: Send, body: bytes, requests: int) -> dict[str, float]:
    for _ in range(50):  # warm the connections
        await send(body)
    lat = []
    for _ in range(requests):
        t = time.perf_counter()
        await send(body)
        lat.append(time.perf_counter() - t)
    lat.sort()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def one() -> None:
        async with sem:
            await send(body)
    await asyncio.gather(*(one() for _ in range(requests)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * lat[int(0.99 * len(lat))],
            "cpu_us_per_req": 1e6 * cpu / requests, "rate_32": requests / wall}


async def main(requests: int) -> None:
    with running_stub() as base:
        url = f"{base}/v1/chat/completions"
        rows = []
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        # httpx's API sent through aiohttp: how the gateway's predictors query the engine.
        for client, transport in ((f"httpx {httpx.__version__}", None), ("httpx+aiohttp", AiohttpTransport(limits=limits))):
            async with httpx.AsyncClient(limits=limits, transport=transport) as hc:
                for name, body in (("plain", BODY), ("stream", STREAM_BODY)):
                    rows.append((client, name, await measure(httpx_sender(hc, url), body, requests)))
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as s:
            for name, body in (("plain", BODY), ("stream", STREAM_BODY)):
                rows.append((f"aiohttp {aiohttp.__version__}", name, await measure(aiohttp_sender(s, url), body, requests)))
    print(f"{'client':18} {'kind':7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>11} {'req/s @32':>10}")
    for client, kind, m in rows:
        print(f"{client:18} {kind:7} {m['p50_ms']:7.3f} {m['p99_ms']:7.3f} {m['cpu_us_per_req']:11.0f} {m['rate_32']:10.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    uvloop.run(main(args.requests))
