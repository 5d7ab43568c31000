"""The gateway in front of the real vLLM engine.

Ordering tests fill the engine's `max_num_seqs` slots with blockers of staggered lengths
(so that slots free one at a time), long enough to be running still when the requests
under test arrive, then send requests of known lengths (ignore_eos)
long first; an oracle predictor (max_tokens) makes the ordering a test of the gateway's
mechanics, not of a predictor. The order in which they start (first token) is the
order the scheduler chose.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import httpx
import openai
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway
from lengthwise.core.policy import Job, Policy, make_policy

pytestmark = pytest.mark.integration

WAITING = (64, 16, 4)  # max_tokens of the requests under test, in arrival order


def _body(engine, max_tokens: int, text: str, **extra: object) -> dict:
    return {"model": engine.model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, **extra}


class Timed:
    """A streamed request: when its first token and its end arrived."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.end: float | None = None
        self.started = asyncio.Event()


async def _stream(client: httpx.AsyncClient, url: str, body: dict, timed: Timed) -> None:
    async with client.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if timed.first is None and '"content":"' in line and '"content":""' not in line:
                timed.first = time.monotonic()
                timed.started.set()
        timed.end = time.monotonic()


async def _start_order(engine, gateway_url: str) -> tuple[list[int], list[int]]:
    """Fill the slots, queue WAITING behind them; the max_tokens in first-token order and in finish order."""
    async with httpx.AsyncClient(timeout=600) as client:
        blockers = [Timed() for _ in range(engine.max_num_seqs)]
        tasks = [asyncio.create_task(_stream(client, gateway_url, _body(engine, 40 + 8 * i, f"Count to {i}."), t))
                 for i, t in enumerate(blockers)]
        # Once one blocker runs, the engine (or the gateway's slots) is busy with all of them.
        await asyncio.wait_for(asyncio.wait([asyncio.create_task(t.started.wait()) for t in blockers],
                                            return_when=asyncio.FIRST_COMPLETED), 300)
        waiting = {n: Timed() for n in WAITING}
        for n, timed in waiting.items():
            tasks.append(asyncio.create_task(_stream(client, gateway_url, _body(engine, n, f"Write {n} words."), timed)))
            await asyncio.sleep(0.05)
        all_sent = time.monotonic()
        await asyncio.gather(*tasks)
    assert min(b.end for b in blockers) > all_sent, "a blocker ended before the requests under test were queued"
    firsts = sorted(WAITING, key=lambda n: waiting[n].first)
    ends = sorted(WAITING, key=lambda n: waiting[n].end)
    return firsts, ends


class Ahead(Policy):
    """A policy shifted below priority 0, so that on a shared engine other clients' requests
    (default priority 0) cannot starve the test's; the order among the test's is the policy's."""

    def __init__(self, name: str) -> None:
        self.base = make_policy(name)
        self.name = self.base.name
        self.time_invariant = self.base.time_invariant

    def key(self, job: Job, now: float) -> float:
        return self.base.key(job, now) - 1e5


@pytest.mark.parametrize("mode", ["priority", "queue"])
@pytest.mark.parametrize("policy, expected", [("sjf", [4, 16, 64]), ("fcfs", [64, 16, 4])])
async def test_requests_start_in_policy_order(engine, mode: str, policy: str, expected: list[int]) -> None:
    # priority_scale: FCFS keys are arrival seconds; ×1000 keeps requests 50 ms apart distinct.
    config = GatewayConfig(backends=(engine.url,), mode=mode, policy=policy, max_inflight=engine.max_num_seqs,
                           priority_scale=1000)
    oracle = FunctionPredictor(lambda r: r.max_tokens)
    async with running_gateway(config, predictor=oracle, policy=Ahead(policy)) as (_, url):
        firsts, ends = await _start_order(engine, url)
    assert firsts == expected
    if policy == "sjf":
        assert ends == [4, 16, 64]  # predicted short finishes before long submitted earlier


async def test_the_self_predictor_end_to_end_shares_the_prefix_cache(engine) -> None:
    """Self-prediction: the prediction query goes first, to the same engine, and the real
    request then finds the prompt in the engine's prefix cache."""
    config = GatewayConfig(backends=(engine.url,), predictor="self")
    prompt = f"[{uuid.uuid4()}] " + "Explain, step by step, how a hash map handles collisions. " * 40
    async with running_gateway(config) as (gateway, url), httpx.AsyncClient(timeout=600) as client:
        assert gateway.predictor.name.startswith("self")
        r = await client.post(url + "/v1/chat/completions", json=_body(engine, 8, prompt))
        assert r.status_code == 200
        assert r.headers["x-lengthwise-predictor"].startswith("self")
        predicted = float(r.headers["x-lengthwise-predicted-tokens"])
        assert 1 <= predicted <= 8 or r.headers["x-lengthwise-predictor"].endswith(";fallback")
        usage = r.json()["usage"]
        assert usage["prompt_tokens"] > 256
        assert usage["prompt_tokens_details"]["cached_tokens"] >= 128  # the prediction query's prefix
        metrics = (await client.get(url + "/metrics")).text
        assert re.search(r'lengthwise_predictions_total\{outcome="\w+",predictor="self[^"]*"\} 1.0', metrics)
        assert re.search(r'lengthwise:prompt_tokens_cached_total\{wait="<0.1s"\} [1-9]', metrics)


async def test_a_request_admitted_under_the_query_window_finds_its_prompt_cached(engine) -> None:
    """The query-window rule (one seat, W = 1): requests that wait are ordered by prompt length, queried
    only at the head of the queue, and each finds the prompt its query left in the engine's prefix cache."""
    config = GatewayConfig(backends=(engine.url,), mode="queue", policy="sjf", predictor="self", max_inflight=1,
                           query_window=1, cheap_predictor="prompt-length")
    prompts = [f"[{uuid.uuid4()}] " + "Explain, step by step, how a B-tree splits a full node. " * n
               for n in (36, 30, 33)]
    async with running_gateway(config) as (gateway, url), httpx.AsyncClient(timeout=600) as client:
        assert gateway.scheduler is not None and gateway.cheap_predictor is not None
        blocker = asyncio.create_task(client.post(url + "/v1/chat/completions",
                                                  json=_body(engine, 48, "Count from one to fifty.")))
        while not gateway.scheduler.running(gateway.pool.backends[0]):
            await asyncio.sleep(0.01)
        responses = await asyncio.gather(*(client.post(url + "/v1/chat/completions", json=_body(engine, 4, p))
                                           for p in prompts))
        assert (await blocker).status_code == 200
        metrics = (await client.get(url + "/metrics")).text
    for r in responses:
        assert r.status_code == 200
        source = r.headers["x-lengthwise-predictor"]
        assert source.startswith("self") and not source.endswith("fallback")  # queried in the window: it answered
        assert float(r.headers["x-lengthwise-queue-ms"]) > 0
        usage = r.json()["usage"]
        assert usage["prompt_tokens"] > 256
        assert usage["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] // 128 * 128 - 128
    assert re.search(r'lengthwise_predictions_total\{outcome="ok",predictor="prompt-length"\} 3.0', metrics)


def _normalize(data: bytes) -> bytes:
    return re.sub(rb'"created":\d+', b'"created":0', re.sub(rb'"id":"[^"]*"', b'"id":""', data))


@pytest.mark.parametrize("stream_options", [None, {"include_usage": True}])
async def test_streams_are_byte_identical_to_the_engines(engine, stream_options: dict | None) -> None:
    config = GatewayConfig(backends=(engine.url,))
    body = _body(engine, 12, "Name three sorting algorithms.", stream=True)
    if stream_options:
        body["stream_options"] = stream_options
    async with running_gateway(config, predictor=FunctionPredictor(lambda r: 12)) as (gateway, url), \
            httpx.AsyncClient(timeout=600) as client:
        direct = await client.post(engine.url + "/v1/chat/completions", json=body)
        proxied = await client.post(url + "/v1/chat/completions", json=body)
        assert _normalize(proxied.content) == _normalize(direct.content)
        assert (b'"usage"' in proxied.content) == bool(stream_options)
        await gateway.completions.predicting.settle()  # completions reach predictors in the learning worker
        assert gateway.predictor.observed[-1][2] == 12  # learned from the usage it asked for


async def test_the_openai_client_works_through_the_gateway(engine) -> None:
    config = GatewayConfig(backends=(engine.url,), mode="both", max_inflight=engine.max_num_seqs)
    async with running_gateway(config, predictor=FunctionPredictor(lambda r: r.max_tokens or 16)) as (_, url):
        texts = []
        for base in (engine.url, url):
            client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused")
            stream = await client.chat.completions.create(
                model=engine.model, messages=[{"role": "user", "content": "Say hello in French."}], max_tokens=8,
                temperature=0, stream=True)
            texts.append("".join([c.choices[0].delta.content or "" async for c in stream if c.choices]))
            models = await client.models.list()
            assert [m.id for m in models.data] == [engine.model]
            await client.close()
        assert texts[0] == texts[1] and texts[1]
