"""Three `lengthwise serve --redis` processes, a real redis-server and two stub backends with one seat each.

No engine: the stubs run in this test's event loop (their `received` log says what reached each backend,
and when), the gateways are processes (so that one can be killed with SIGKILL). Keys are known: policy
`sjf` on the `prompt-length` predictor orders by prompt tokens, and each prompt carries a tag naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lengthwise.bench.services import free_port
from lengthwise.testing.gateway import running_stub
from lengthwise.testing.redis_server import RedisServer
from lengthwise.testing.stub_backend import StubBackend, prompt_text

pytestmark = pytest.mark.integration

LEASE_S = 2.0
#: Between a seat's grant in Redis and the request reaching the backend: the grant's delivery to
#: its replica and the forwarding (milliseconds here). A request queued within this window before a
#: seat is granted cannot take that seat: it is not an inversion (docs/SCALE_OUT.md, "Consistency").
RACE_WINDOW_S = 0.05
#: Far above anything under test: only a process that never answers reaches it.
HANG_GUARD_S = 60.0


@dataclass
class Replica:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.asynccontextmanager
async def replicas(n: int, backends: list[str], redis_url: str, tmp: Path) -> AsyncIterator[list[Replica]]:
    """`n` gateway processes in queue mode sharing `redis_url`, each healthy and on the shared queue (waited
    for without blocking the event loop, where the stubs answer their health checks)."""
    started: list[Replica] = []
    try:
        for i in range(n):
            port, log = free_port(), tmp / f"gateway{i}.log"
            cmd = [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--engine", "openai", "--mode", "queue", "--max-inflight", "1",
                   "--policy", "sjf", "--predictor", "prompt-length", "--no-lazy-prediction",
                   "--redis", redis_url, "--redis-lease", str(LEASE_S),
                   "--affinity-slack", "0"]  # each request to the backend with the least predicted work
            for backend in backends:
                cmd += ["--backend", backend]
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
            started.append(Replica(f"http://127.0.0.1:{port}", proc, log))
        for r in started:
            deadline = time.monotonic() + HANG_GUARD_S
            while not await _on_shared_queue(r):
                assert r.proc.poll() is None and time.monotonic() < deadline, r.log.read_text()
                await asyncio.sleep(0.2)
        yield started
    finally:
        for r in started:
            if r.proc.poll() is None:
                os.killpg(r.proc.pid, signal.SIGTERM)
        for r in started:
            try:
                r.proc.wait(timeout=HANG_GUARD_S)
            except subprocess.TimeoutExpired:
                os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()


async def _status(r: Replica) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(r.url + "/lengthwise/status")).json()


async def _on_shared_queue(r: Replica) -> bool:
    try:
        return bool((await _status(r))["redis"]["queue"]["connected"])
    except httpx.HTTPError:
        return False


@contextlib.asynccontextmanager
async def two_stubs(**fields: Any) -> AsyncIterator[tuple[list[StubBackend], list[str]]]:
    async with running_stub(**fields) as (a, url_a), running_stub(**fields) as (b, url_b):
        yield [a, b], [url_a, url_b]


def _body(tag: str, words: int, **extra: Any) -> dict[str, Any]:
    return {"model": "stub-model", "max_tokens": 4000, "messages": [{"role": "user", "content": f"[{tag}] " + "word " * words}],
            **extra}


def _tag(body: dict[str, Any]) -> str:
    found = re.search(r"\[([^\]]+)\]", prompt_text("/v1/chat/completions", body))
    assert found is not None
    return found.group(1)


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    return await client.post(url + "/v1/chat/completions", json=body)


async def test_requests_entering_different_replicas_are_admitted_in_global_key_order(tmp_path: Path) -> None:
    """Every backend admits in key order among the requests that waited together (inversions counted).

    Times are CLOCK_MONOTONIC, which the test, its stubs and the gateway processes share. A pair counts
    as having waited together when the later-admitted one had surely been queued (at most its arrival at
    the backend minus its queue wait) before the earlier one surely got its seat (at least its sending
    plus its queue wait), by more than the race window.
    """
    n = 30
    words = {f"r{i}": w for i, w in enumerate(random.Random(7).sample(range(5, 400), n))}
    sent: dict[str, float] = {}

    async def send(client: httpx.AsyncClient, url: str, tag: str) -> httpx.Response:
        sent[tag] = time.monotonic()
        return await _post(client, url, _body(tag, words[tag]))

    with RedisServer() as redis:
        async with two_stubs(latency_s=0.25, length_fn=lambda body: 2) as (stubs, urls):
            async with replicas(3, urls, redis.url, tmp_path) as gateways:
                async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
                    replies = await asyncio.gather(*(send(client, gateways[i % 3].url, tag)
                                                     for i, tag in enumerate(words)))
    assert [r.status_code for r in replies] == [200] * n
    waited = {_tag_of(r): float(r.headers["x-lengthwise-queue-ms"]) / 1000 for r in replies}
    inversions = pairs = 0
    for stub in stubs:
        assert stub.max_inflight_seen == 1  # one seat, whichever replica admitted
        admitted = [(_tag(r.body), r.at) for r in stub.received]
        for i, (first, _) in enumerate(admitted):
            seated_after = sent[first] + waited[first]
            for later, later_at in admitted[i + 1:]:
                if later_at - waited[later] < seated_after - RACE_WINDOW_S:
                    pairs += 1
                    inversions += words[later] < words[first]
    print(f"\nglobal key order: {inversions} inversions in {pairs} pairs that waited together")
    assert pairs > n  # the requests did queue across replicas
    assert inversions == 0


def _tag_of(reply: httpx.Response) -> str:
    return _tag(json.loads(reply.request.content))


async def test_a_killed_replica_gives_its_seats_back_within_the_lease(tmp_path: Path) -> None:
    """Replica 2 holds both seats and has requests queued; after SIGKILL its seats come back within the
    lease (and a heartbeat), its queued requests never reach a backend, and the others keep serving."""
    hold = lambda body: 400 if "hold" in prompt_text("/v1/chat/completions", body) else 2  # noqa: E731
    with RedisServer() as redis:
        async with two_stubs(length_fn=hold, token_interval_s=0.05) as (stubs, urls):
            async with replicas(3, urls, redis.url, tmp_path) as gateways:
                victim = gateways[2]
                async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
                    held = []
                    deadline = time.monotonic() + HANG_GUARD_S
                    for i in range(2):  # one after the other: the second goes to the other backend
                        held.append(asyncio.create_task(_post(client, victim.url, _body(f"hold{i}", 5, stream=True))))
                        while sum(s.inflight for s in stubs) <= i:
                            assert time.monotonic() < deadline
                            await asyncio.sleep(0.05)
                    assert all(s.inflight == 1 for s in stubs)
                    queued = [asyncio.create_task(_post(client, victim.url, _body(f"victim{i}", 50 + i)))
                              for i in range(4)]
                    await asyncio.sleep(0.5)
                    os.killpg(victim.proc.pid, signal.SIGKILL)
                    victim.proc.wait()
                    killed_at = time.monotonic()
                    others = await asyncio.gather(*(
                        _post(client, gateways[i % 2].url, _body(f"other{i}", 10 + i)) for i in range(6)))
                    for task in [*held, *queued]:
                        with contextlib.suppress(httpx.HTTPError):
                            await task
    assert [r.status_code for r in others] == [200] * 6
    served = [(r.at, _tag(r.body)) for s in stubs for r in s.received if r.at > killed_at]
    assert served and not any(tag.startswith("victim") for _, tag in served)
    first_after = min(at for at, _ in served) - killed_at
    print(f"\nseats back {first_after:.2f} s after SIGKILL (lease {LEASE_S} s, heartbeat {LEASE_S / 3:.2f} s)")
    assert first_after <= LEASE_S + 2 * LEASE_S / 3 + 1.0


async def test_redis_stopped_mid_run_loses_nothing_and_answers_each_request_once(tmp_path: Path) -> None:
    """Redis is killed while requests wait and comes back empty: every request gets one 200, each
    reaches a backend exactly once, and every replica falls back, says so, and rejoins."""
    n = 60
    with RedisServer() as redis:
        async with two_stubs(latency_s=0.1, length_fn=lambda body: 2) as (stubs, urls):
            async with replicas(3, urls, redis.url, tmp_path) as gateways:
                async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:
                    tasks = [asyncio.create_task(_post(client, gateways[i % 3].url, _body(f"q{i}", 5 + i)))
                             for i in range(n)]
                    await asyncio.sleep(1.0)
                    redis.stop()
                    await asyncio.sleep(1.5)
                    redis.start()  # same port, empty
                    replies = await asyncio.gather(*tasks)
                    deadline = time.monotonic() + HANG_GUARD_S
                    while not all([await _on_shared_queue(g) for g in gateways]):
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.2)
                    statuses = [(await _status(g))["redis"]["queue"] for g in gateways]
                    metrics = (await client.get(gateways[0].url + "/metrics")).text
    assert [r.status_code for r in replies] == [200] * n
    tags = sorted(_tag(r.body) for s in stubs for r in s.received)
    assert tags == sorted(f"q{i}" for i in range(n))  # each exactly once
    assert all(s["fallbacks"] >= 1 for s in statuses), statuses
    assert "lengthwise_redis_fallbacks_total" in metrics and 'lengthwise_redis_connected{part="queue"} 1.0' in metrics
