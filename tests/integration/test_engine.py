"""The embedded engine, for real: chat, priorities, the prefix cache, and a `down` that leaves nothing behind."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from lengthwise.bench.services import engine_busy
from lengthwise.engine import EngineHandle, server
from lengthwise.engine.resources import port_in_use

if TYPE_CHECKING:
    from conftest import Engine

pytestmark = pytest.mark.integration


def chat(engine: Engine, content: str, max_tokens: int = 8, **extra: object) -> dict:
    body = {
        "model": engine.model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        **extra,
    }
    response = httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_chat_completion(engine: Engine) -> None:
    data = chat(engine, "What is the capital of France? Answer in one word.")
    assert data["model"] == engine.model
    assert "paris" in data["choices"][0]["message"]["content"].lower()
    assert 0 < data["usage"]["completion_tokens"] <= 8


def test_priority_field_is_accepted(engine: Engine) -> None:
    for priority in (-5, 0, 10):
        assert chat(engine, "Say hi.", max_tokens=2, priority=priority)["usage"]["completion_tokens"] > 0


async def test_a_more_urgent_request_overtakes_a_waiting_one(engine: Engine) -> None:
    """With every slot busy, the waiting request with the lower priority value is admitted first."""
    if engine.max_num_seqs != 2:
        pytest.skip("the scenario fills exactly two slots")
    ended: dict[str, float] = {}

    async def send(client: httpx.AsyncClient, name: str, tokens: int, priority: int) -> None:
        body = {
            "model": engine.model,
            "messages": [{"role": "user", "content": f"Count slowly, request {name}."}],
            "max_tokens": tokens,
            "ignore_eos": True,
            "temperature": 0,
            "priority": priority,
        }
        response = await client.post(f"{engine.url}/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == tokens
        ended[name] = time.monotonic()

    async def until_busy(requests: int) -> None:
        """Until the engine holds `requests` or more (running or waiting): by its gauges, not a guess of its speed."""
        while (await asyncio.to_thread(engine_busy, engine.url) or 0) < requests:
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=300) as client:
        running = [asyncio.create_task(send(client, "short", 64, 0)), asyncio.create_task(send(client, "long", 192, 0))]
        await until_busy(2)  # both slots taken
        lazy = asyncio.create_task(send(client, "lazy", 16, 10))  # arrives first, but less urgent
        await until_busy(3)
        urgent = asyncio.create_task(send(client, "urgent", 16, -10))
        await asyncio.gather(*running, lazy, urgent)
    # "short" frees a slot first; "urgent" takes it and is done before "lazy" can start.
    assert ended["urgent"] < ended["lazy"], ended


def test_shared_prefix_hits_the_prefix_cache(engine: Engine) -> None:
    # ~700 tokens of shared context: several whole 128-token blocks on the CPU backend.
    context = "\n".join(f"Line {i}: the inventory holds {i * 7 % 13} crates of item {i}." for i in range(60))
    first = chat(engine, f"{context}\n\nHow many crates of item 3 are there?", max_tokens=4)
    assert first["usage"]["prompt_tokens"] >= 3 * 128
    second = chat(engine, f"{context}\n\nHow many crates of item 5 are there?", max_tokens=4)
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 256, second["usage"]


def test_down_leaves_no_process_behind(managed_engine: EngineHandle | None, engine: Engine) -> None:
    """Stop the session's engine, check that nothing of it survives, then start it again for later tests."""
    if managed_engine is None:
        pytest.skip("the engine at LENGTHWISE_ENGINE_URL is not ours to stop")
    port = managed_engine.config.port
    handle = server.find(port)
    assert handle is not None
    procs = server.engine_processes(handle)
    names = " ".join(p.name() for p in procs)
    assert len(procs) >= 3 and "EngineCore" in names, names  # API server, engine core, worker

    stopped = server.stop(port)

    assert {p.pid for p in procs} <= set(stopped)
    survivors = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    assert [p for p in psutil.process_iter() if server._pgid(p.pid) == handle.pid] == []
    assert not port_in_use(handle.config.host, port)
    assert server.find(port) is None

    restarted = server.start(handle.config)
    assert server.is_healthy(restarted.url) and restarted.url == engine.url
