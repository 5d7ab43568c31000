"""Measure a real engine's step time and fit the simulator's linear cost model to it.

Only the HTTP API is used, so any OpenAI-compatible vLLM works:

- decode steps: `B` concurrent streams with prompts of `C` tokens, fixed length
  (`ignore_eos`); while all `B` are decoding, each gap between streamed tokens is
  one engine step of `B` decodes over `B·(C + generated)` context tokens;
- prefill steps: one request of `P` prompt tokens and one output token; its TTFT
  is one prefill step of `P` tokens (plus the API's own latency, which the fit's
  constant absorbs).

Prompts are random token ids, unique per request, so the prefix cache never hits.
The engine should be otherwise idle: the waiting and running gauges in
``/metrics`` are read around each measurement and any outside traffic is reported.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from lengthwise.sim.cost import LinearCost
from lengthwise.core.sse import sse_data

#: Token ids drawn for prompts: plain vocabulary, away from special tokens.
TOKEN_RANGE = (1000, 30000)


@dataclass(frozen=True)
class ProfilePlan:
    batches: tuple[int, ...] = (1, 2, 3, 4)
    contexts: tuple[int, ...] = (64, 512, 1536)
    prefills: tuple[int, ...] = (128, 512, 1024, 2048)
    decode_tokens: int = 48
    repeats: int = 2

    def __post_init__(self) -> None:
        if self.size < len(LinearCost.FEATURES) or not (self.batches and self.contexts and self.prefills):
            raise ValueError(
                f"a profile needs batches, contexts and prefills, and at least {len(LinearCost.FEATURES)} "
                f"measurements to fit; this plan makes {self.size}"
            )
        if self.decode_tokens < 8:
            raise ValueError("decode_tokens must be >= 8 to see steady decode steps")

    @property
    def size(self) -> int:
        return self.repeats * (len(self.batches) * len(self.contexts) + len(self.prefills))


@dataclass(frozen=True)
class Sample:
    kind: str
    num_tokens: int
    num_seqs: int
    decode_ctx: int
    prefill: tuple[tuple[int, int], ...]
    seconds: float

    def features(self) -> list[float]:
        return LinearCost.features(self.num_tokens, self.num_seqs, self.decode_ctx, self.prefill)


class _Engine:
    """The few API calls a profile needs."""

    def __init__(self, client: httpx.AsyncClient, url: str, model: str) -> None:
        self.client, self.url, self.model = client, url.rstrip("/"), model
        self.rng = random.Random(time.time_ns())
        self.busy_seen = 0.0

    def prompt(self, tokens: int) -> list[int]:
        return [self.rng.randint(*TOKEN_RANGE) for _ in range(tokens)]

    async def stream(self, prompt_tokens: int, max_tokens: int) -> list[float]:
        """Send one request; return the arrival time of every streamed chunk."""
        body = {
            "model": self.model, "prompt": self.prompt(prompt_tokens), "max_tokens": max_tokens,
            "min_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
        }  # fmt: skip
        times: list[float] = []
        async with self.client.stream("POST", f"{self.url}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"engine answered HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
            async for data in sse_data(resp):
                if data != "[DONE]":
                    times.append(time.perf_counter())
        return times

    async def load(self) -> float:
        """Requests running or waiting right now, from /metrics (0 if the gauges are missing)."""
        try:
            text = (await self.client.get(f"{self.url}/metrics", timeout=5.0)).text
        except httpx.HTTPError:
            return 0.0
        total = 0.0
        for line in text.splitlines():
            if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def measure(self, coro: Any) -> Any:
        """Run a measurement, noting any request in the engine just before it starts."""
        self.busy_seen = max(self.busy_seen, await self.load())
        return await coro


async def _decode_sample(engine: _Engine, batch: int, context: int, tokens: int) -> Sample | None:
    streams = await asyncio.gather(*(engine.stream(context, tokens) for _ in range(batch)))
    if any(len(s) < 4 for s in streams):
        return None
    start = max(s[1] for s in streams)  # every stream has produced its first token
    end = min(s[-1] for s in streams)  # none has finished
    gaps = [b - a for s in streams for a, b in zip(s, s[1:], strict=False) if a >= start and b <= end]
    if len(gaps) < 3:
        return None
    generated = tokens // 2
    return Sample("decode", batch, batch, batch * (context + generated), (), statistics.median(gaps))


async def _prefill_sample(engine: _Engine, prompt: int, started: Callable[[], float]) -> Sample:
    t0 = started()
    times = await engine.stream(prompt, 1)
    return Sample("prefill", prompt, 1, 0, ((prompt, 0),), times[0] - t0)


async def _measure(url: str, plan: ProfilePlan, model: str, progress: Callable[[], None] | None) -> dict[str, Any]:
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(600.0)) as client:
        engine = _Engine(client, url, model)
        await engine.stream(16, 2)  # warm-up
        for _ in range(plan.repeats):
            for prompt in plan.prefills:
                samples.append(await engine.measure(_prefill_sample(engine, prompt, time.perf_counter)))
                if progress:
                    progress()
            for batch in plan.batches:
                for context in plan.contexts:
                    sample = await engine.measure(_decode_sample(engine, batch, context, plan.decode_tokens))
                    if sample is not None:
                        samples.append(sample)
                    if progress:
                        progress()
        busy = engine.busy_seen
    cost = LinearCost.fit([s.features() for s in samples], [s.seconds for s in samples])
    errors = [abs(cost.step_time(s.num_tokens, s.num_seqs, s.decode_ctx, s.prefill) - s.seconds) / s.seconds for s in samples]
    return {
        "kind": "linear",
        "url": url,
        "model": model,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "coef": {f: getattr(cost, f) for f in LinearCost.FEATURES},
        "fit_median_rel_error": statistics.median(errors),
        "plan": asdict(plan),
        "samples": [asdict(s) for s in samples],
        "interference": (
            f"the engine had up to {busy:.0f} other requests running or waiting during the measurements"
            if busy > 0 else None
        ),
    }  # fmt: skip


def measure_profile(
    url: str, plan: ProfilePlan, model: str | None = None, progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Measure, fit and return the profile as a JSON-ready dict (`kind: linear`)."""
    from lengthwise.core.openai_server import served_model

    return asyncio.run(_measure(url, plan, model or served_model(url), progress))
