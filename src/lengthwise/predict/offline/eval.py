"""`predict eval`: self-predictions and the real answers for real prompts, as raw JSONL.

For each prompt, every postfix variant's prediction query runs first (in an order
rotated per prompt, so no variant always pays the cold prefill), then the real
request (streamed, to time its first token) right after, on the same engine. One
JSON line per prompt holds everything the report needs, so analyses rerun without
the engine; prompts already in the file are skipped, so a stopped run resumes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lengthwise.predict.base import LengthRequest
from lengthwise.predict.baselines import prompt_hash
from lengthwise.predict.self_query.predictor import SelfPredictor, SelfQuery
from lengthwise.core.io import append_jsonl, read_jsonl
from lengthwise.core.sse import sse_data
from lengthwise.core.usage import cached_tokens
from lengthwise.workload.sharegpt import Prompt


@dataclass(frozen=True)
class EvalConfig:
    base_url: str
    model: str
    variants: Sequence[str] = ("seed", "scale", "fewshot")
    max_tokens: int = 512
    concurrency: int = 4
    timeout_s: float = 900.0
    query_max_tokens: int = 8
    top_logprobs: int = 20
    #: Priority of every request; the eval shares the engine, so it stays neutral.
    priority: int | None = None
    #: The cap the postfix states (`{MAX_TOKENS}`) when it differs from the real answers' `max_tokens`:
    #: another run's queries repeated word for word, with cheaper real answers.
    stated_max_tokens: int | None = None

    @property
    def query_max_tokens_limit(self) -> int:
        return self.stated_max_tokens or self.max_tokens


def done_ids(path: Path) -> set[str]:
    """Ids already recorded (a torn last line is ignored and will be redone)."""
    return {r["id"] for r in read_jsonl(path) if "id" in r} if path.exists() else set()


def variant_record(result: SelfQuery, order: int) -> dict[str, Any]:
    dist = result.distribution
    clipped = dist.clipped(1.0, result.max_tokens) if dist else None
    return {
        "order": order,
        "text": result.text,
        "parsed": result.parsed.value,
        "low": result.parsed.low,
        "high": result.parsed.high,
        "parse_error": result.parsed.reason,
        "finish_reason": result.finish_reason,
        "distribution": dist.to_json() if dist else None,
        "summary": clipped.summary() if clipped else None,
        "latency_s": round(result.latency_s, 4),
        "prompt_tokens": result.cost.prompt_tokens,
        "completion_tokens": result.cost.completion_tokens,
        "cached_tokens": result.cost.cached_tokens,
    }


async def real_answer(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    """Stream the real request: output tokens, cached prompt tokens, TTFT and latency."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    ttft, finish, usage, pieces = None, None, {}, []
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for data in sse_data(response):
            if data == "[DONE]":
                continue
            chunk = json.loads(data)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    pieces.append(content)
                finish = choice.get("finish_reason") or finish
    return {
        "actual_tokens": int(usage.get("completion_tokens") or 0),
        "finish_reason": finish,
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "cached_tokens": cached_tokens(usage) or 0,
        "ttft_s": None if ttft is None else round(ttft, 4),
        "latency_s": round(time.perf_counter() - started, 4),
        "answer": "".join(pieces),
    }


async def eval_prompt(
    client: httpx.AsyncClient, config: EvalConfig, predictors: dict[str, SelfPredictor], prompt: Prompt, slot: int
) -> dict[str, Any]:
    """One prompt: every variant's prediction query, then the real request right after."""
    body = {"model": config.model, "messages": prompt.messages, "max_tokens": config.max_tokens}
    stated = config.query_max_tokens_limit
    request = LengthRequest("chat", {**body, "max_tokens": stated}, request_id=prompt.id)
    names = list(config.variants)
    order = names[slot % len(names):] + names[: slot % len(names)]
    variants: dict[str, Any] = {}
    for position, name in enumerate(order):
        try:
            variants[name] = variant_record(await predictors[name].query(request), position)
        except Exception as exc:  # recorded, not fatal: the report counts these as fallbacks
            variants[name] = {"order": position, "error": f"{type(exc).__name__}: {exc}"[:300]}
    real_body = {**body, "temperature": 0.0}
    if config.priority is not None:
        real_body["priority"] = config.priority
    real = await real_answer(client, config.base_url.rstrip("/") + "/v1/chat/completions", real_body)
    return {
        "id": prompt.id,
        "index": prompt.index,
        "prompt_hash": prompt_hash(request),
        "prompt_tokens_est": prompt.prompt_tokens,
        "max_tokens": config.max_tokens,
        "stated_max_tokens": stated,
        "model": config.model,
        "variants": variants,
        **real,
        "finished_at": time.time(),
    }


async def run_eval(
    prompts: Iterable[Prompt],
    out: Path,
    config: EvalConfig,
    on_record: Callable[[dict[str, Any] | None, Exception | None], None] = lambda r, e: None,
) -> None:
    """Evaluate prompts not yet in `out`, `config.concurrency` at a time, appending records."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.touch()
    semaphore = asyncio.Semaphore(config.concurrency)
    async with httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s, connect=10.0)) as client:
        predictors = {
            name: SelfPredictor(
                client,
                config.base_url,
                config.model,
                name,
                timeout_s=config.timeout_s,
                max_tokens_limit=config.query_max_tokens_limit,
                query_max_tokens=config.query_max_tokens,
                top_logprobs=config.top_logprobs,
                priority=config.priority,
            )
            for name in config.variants
        }

        async def one(slot: int, prompt: Prompt) -> None:
            async with semaphore:
                try:
                    record = await eval_prompt(client, config, predictors, prompt, slot)
                except Exception as exc:  # the real request failed: leave it for a rerun
                    on_record(None, exc)
                    return
                append_jsonl(out, record)
                on_record(record, None)

        await asyncio.gather(*(one(prompt.index, prompt) for prompt in prompts))
