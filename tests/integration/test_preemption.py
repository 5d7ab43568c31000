"""Preemption (--preempt) in front of the real vLLM engine: with greedy decoding, an answer preempted
and resumed as a continuation is byte for byte the answer served without preemption, for chat and
completions, streaming and not; the `openai` client sees one stream.

One seat in the gateway (`max_inflight=1`): a long request decodes, a short one arrives, the
long one yields (its upstream connection is closed: vLLM aborts it) and resumes once the short
one is done. An oracle predictor (max_tokens) makes the decision a test of the mechanism.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import openai
import pytest

from lengthwise.gateway import completions
from lengthwise.gateway.config import GatewayConfig, PreemptSettings
from lengthwise.gateway.resumable import Transcript, continuation_body
from lengthwise.testing.answers import answer_text, completion_body, completion_path, masked
from lengthwise.testing.gateway import FunctionPredictor, running_gateway

pytestmark = pytest.mark.integration

LONG, SHORT = 48, 2
#: The long answer has produced this many tokens when the short request is sent.
CUT_AFTER = 6
PROMPT = "Explain in detail how a hash map works, with an example in Python."


def _body(engine: Any, endpoint: str, max_tokens: int, stream: bool, text: str = PROMPT) -> dict[str, Any]:
    prompt = text if endpoint == "chat" else f"Question: {text}\nAnswer:"
    return completion_body(endpoint, engine.model, prompt, max_tokens, stream, temperature=0)


async def _generated(client: httpx.AsyncClient, engine: Any) -> float:
    """vLLM's count of output tokens generated since it started."""
    metrics = (await client.get(engine.url + "/metrics")).text
    return sum(float(m) for m in re.findall(r"^vllm:generation_tokens_total(?:\{[^}]*\})? (\S+)$", metrics, re.M))


def _gateway_config(engine: Any) -> GatewayConfig:
    return GatewayConfig(backends=(engine.url,), mode="queue", policy="srpt", max_inflight=1,
                         preempt=PreemptSettings(margin=2, max=1, early=1.0), read_timeout_s=600)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize("endpoint", ["chat", "completion"])
async def test_a_preempted_greedy_answer_is_byte_identical(engine, endpoint: str, stream: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The stitched answer is the first run's text plus what the engine answers to the continuation the
    gateway sent (the gateway adds nothing); it is the unpreempted answer byte for byte wherever the
    engine's own greedy decoding does not depend on how the context was computed (decoded token by
    token, or prefilled with the continuation): checked at the same cut, straight on the engine."""
    sent: list[tuple[dict[str, Any], str]] = []

    def recorded(endpoint: Any, body: dict[str, Any], transcript: Transcript) -> dict[str, Any]:
        sent.append((continuation_body(endpoint, body, transcript), "".join(transcript.text)))
        return sent[-1][0]

    monkeypatch.setattr(completions, "continuation_body", recorded)
    oracle = FunctionPredictor(lambda r: r.max_tokens)
    path = completion_path(endpoint)
    async with running_gateway(_gateway_config(engine), predictor=oracle) as (gateway, url), \
            httpx.AsyncClient(timeout=600) as client:
        direct = await client.post(engine.url + path, json=_body(engine, endpoint, LONG, False))
        alone = await client.post(url + path, json=_body(engine, endpoint, LONG, stream))
        before = await _generated(client, engine)
        long = asyncio.create_task(client.post(url + path, json=_body(engine, endpoint, LONG, stream)))
        while await _generated(client, engine) < before + CUT_AFTER:
            await asyncio.sleep(0.05)
        short = await client.post(url + path, json=_body(engine, endpoint, SHORT, stream, "Say hi."))
        short_first = not long.done()
        long_response = await long
        assert direct.status_code == alone.status_code == long_response.status_code == short.status_code == 200
        assert gateway.metrics.preemptions._value.get() == 1 and short_first and len(sent) == 1
        resumed_prompt = gateway.metrics.resume_prompt_tokens._value.get()
        resumed_cached = gateway.metrics.resume_cached_tokens._value.get()
        continuation, before_cut = sent[0]
        own = await client.post(engine.url + path, json={**continuation, "stream": False, "stream_options": None})
    unbroken = answer_text(endpoint, direct.content, False)
    stitched = answer_text(endpoint, long_response.content, stream)
    invariant = before_cut + answer_text(endpoint, own.content, False) == unbroken
    print(f"\n{endpoint} {'stream' if stream else 'plain'}: cut after {len(before_cut)} characters, continuation "
          f"prompt {resumed_prompt:.0f} tokens ({resumed_cached:.0f} from the prefix cache); the engine's own "
          f"greedy answer is {'the same' if invariant else 'DIFFERENT'} when resumed at that cut")
    assert stitched == before_cut + answer_text(endpoint, own.content, False)
    if invariant:
        assert stitched == unbroken
        assert masked(long_response.content) == masked(alone.content)


async def test_the_openai_client_sees_one_stream(engine) -> None:
    oracle = FunctionPredictor(lambda r: r.max_tokens)
    async with running_gateway(_gateway_config(engine), predictor=oracle) as (gateway, url), \
            httpx.AsyncClient(timeout=600) as probe:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", timeout=600)
        messages = [{"role": "user", "content": PROMPT}]

        async def collect() -> list[Any]:
            stream = await client.chat.completions.create(model=engine.model, messages=messages, max_tokens=LONG,
                                                          temperature=0, stream=True,
                                                          stream_options={"include_usage": True})
            return [chunk async for chunk in stream]

        alone = await client.chat.completions.create(model=engine.model, messages=messages, max_tokens=LONG,
                                                     temperature=0)
        before = await _generated(probe, engine)
        task = asyncio.create_task(collect())
        while await _generated(probe, engine) < before + CUT_AFTER:
            await asyncio.sleep(0.05)
        await client.chat.completions.create(model=engine.model, messages=[{"role": "user", "content": "Say hi."}],
                                             max_tokens=SHORT, temperature=0)
        chunks = await task
        await client.close()
        assert gateway.metrics.preemptions._value.get() == 1
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone.choices[0].message.content
    assert chunks[-1].usage is not None and alone.usage is not None
    assert chunks[-1].usage.completion_tokens == alone.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == alone.usage.prompt_tokens


async def test_a_continuation_is_prefilled_from_the_prefix_cache(engine) -> None:
    """A preempted request's blocks stay in vLLM's prefix cache after the abort: its continuation (prompt +
    answer so far) finds the prompt's whole blocks there. Prints the share."""
    notes = " ".join(f"Note {i}: the key {i * 7919 % 1000} maps to bucket {i * 7919 % 64}." for i in range(60))
    text = f"{notes}\n\nUsing the notes above, {PROMPT[0].lower()}{PROMPT[1:]}"
    oracle = FunctionPredictor(lambda r: r.max_tokens)
    async with running_gateway(_gateway_config(engine), predictor=oracle) as (gateway, url), \
            httpx.AsyncClient(timeout=600) as client:
        before = await _generated(client, engine)
        long = asyncio.create_task(client.post(url + "/v1/chat/completions",
                                               json=_body(engine, "chat", LONG, True, text)))
        while await _generated(client, engine) < before + CUT_AFTER:
            await asyncio.sleep(0.05)
        await client.post(url + "/v1/chat/completions", json=_body(engine, "chat", SHORT, False, "Say hi."))
        assert (await long).status_code == 200
        assert gateway.metrics.preemptions._value.get() == 1
        prompt = gateway.metrics.resume_prompt_tokens._value.get()
        cached = gateway.metrics.resume_cached_tokens._value.get()
    print(f"\ncontinuation prompt {prompt:.0f} tokens, {cached:.0f} from the prefix cache ({cached / prompt:.2f})")
    assert 0 < cached < prompt
