"""The load generator against an in-process fake streaming backend (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import httpx
import numpy as np

from lengthwise.bench.loadgen import Target, replay
from lengthwise.bench.plan import build_plan
from lengthwise.workload.arrivals import gamma_arrivals

TOKEN_DELAY_S = 0.02


def fake_backend(first_token_delay_s: float = 0.05, fail_prompt: str = "FAIL") -> httpx.MockTransport:
    """Streams one chunk per word of the prompt (capped by max_tokens), like vLLM's chat SSE."""

    async def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        prompt = body["messages"][0]["content"]
        if prompt == fail_prompt:
            return httpx.Response(503, json={"error": {"message": "backend down"}})
        words = prompt.split()[: body["max_tokens"]]

        async def sse():
            yield b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
            await asyncio.sleep(first_token_delay_s)
            for w in words:
                chunk = {"choices": [{"index": 0, "delta": {"content": w}}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(TOKEN_DELAY_S)
            usage = {"prompt_tokens": 7, "completion_tokens": len(words),
                     "prompt_tokens_details": {"cached_tokens": 3}}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        headers = {"content-type": "text/event-stream", "x-lengthwise-predicted-tokens": str(len(words) + 1)}
        return httpx.Response(200, headers=headers, content=sse())

    return httpx.MockTransport(handler)


async def run(prompts: list[str], arrivals: list[float], max_tokens: int = 16):
    plan = build_plan(prompts, arrivals, max_tokens=max_tokens)
    async with httpx.AsyncClient(transport=fake_backend()) as client:
        return await replay(plan, Target(url="http://fake", model="m"), client=client, progress=False)


async def test_timings_tokens_and_prediction_are_recorded() -> None:
    first, second = await run(["a b c d e", "x y"], [0.0, 0.1])
    assert first.ok and second.ok
    assert first.output_tokens == 5 and first.prompt_tokens == 7
    assert first.cached_tokens == 3 and first.predicted_tokens == 6.0
    assert first.ttft >= 0.05
    assert first.itl is not None and len(first.itl) == 4
    assert all(gap >= TOKEN_DELAY_S * 0.9 for gap in first.itl)
    assert first.tpot >= TOKEN_DELAY_S * 0.9 and first.e2el > first.ttft
    assert second.arrival >= 0.1 and second.finish_time >= second.first_token_time


async def test_errors_are_recorded_not_raised() -> None:
    good, bad = await run(["a b", "FAIL"], [0.0, 0.0])
    assert good.ok and not bad.ok
    assert bad.error is not None and "503" in bad.error and "backend down" in bad.error
    assert bad.output_tokens == 0 and not bad.itl


async def test_unreachable_server_is_an_error_per_request() -> None:
    plan = build_plan(["a"], [0.0], max_tokens=4)
    (rec,) = await replay(plan, Target(url="http://127.0.0.1:9", model="m"), progress=False)
    assert not rec.ok and rec.error is not None and "Connect" in rec.error


async def test_requests_leave_at_their_seeded_arrival_times() -> None:
    arrivals = gamma_arrivals(8, rate=20.0, burstiness=0.5, seed=3)
    assert np.array_equal(arrivals, gamma_arrivals(8, rate=20.0, burstiness=0.5, seed=3))
    records = await run(["a b"] * 8, list(arrivals))
    sent = np.array([r.arrival for r in records])
    assert np.all(sent >= arrivals - 1e-3)
    assert np.all(sent - arrivals < 0.1)  # generous: a loaded CI machine


async def test_priority_and_usage_request_are_sent() -> None:
    seen: list[dict] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=b"data: [DONE]\n\n")

    plan = [replace(p, priority=7) for p in build_plan(["hi"], [0.0], max_tokens=3)]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        (rec,) = await replay(plan, Target(url="http://fake", model="m", endpoint="completions"), client=client, progress=False)
    body = seen[0]
    assert body["priority"] == 7 and body["prompt"] == "hi" and body["temperature"] == 0.0
    assert body["stream"] and body["stream_options"] == {"include_usage": True} and body["max_tokens"] == 3
    assert not rec.ok and rec.error == "the stream carried no choices"


async def test_a_stream_cut_short_is_an_error() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        chunk = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
        return httpx.Response(200, content=f"data: {json.dumps(chunk)}\n\n".encode())

    plan = build_plan(["hi"], [0.0], max_tokens=3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        (rec,) = await replay(plan, Target(url="http://fake", model="m"), client=client, progress=False)
    assert not rec.ok and rec.error == "the stream ended without [DONE]"
