"""The load generator: replays a plan against an OpenAI-compatible server, streaming.

Each request is sent at its planned arrival offset whatever happened to the
others (an open loop, as in `vllm bench serve`), so a slow policy builds a queue
instead of slowing the arrivals. Timings are taken per streamed chunk; token
counts come from the server's `usage` (`stream_options.include_usage`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lengthwise.bench.plan import PlannedRequest

Endpoint = Literal["chat", "completions"]
PREDICTED_HEADER = "x-lengthwise-predicted-tokens"


@dataclass
class Observation:
    """What the client saw of one request; times are seconds after the run's start."""

    request: PlannedRequest
    sent_s: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    end_s: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    predicted_tokens: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Target:
    """Where and how to send: server root URL, model, endpoint kind, extra headers."""

    url: str
    model: str
    endpoint: Endpoint = "chat"
    api_key: str | None = None
    timeout_s: float = 1800.0

    @property
    def path(self) -> str:
        return "/v1/chat/completions" if self.endpoint == "chat" else "/v1/completions"


def request_body(target: Target, req: PlannedRequest) -> dict[str, Any]:
    """The streamed request for `req`: temperature 0, usage in the last chunk."""
    body: dict[str, Any] = {
        "model": target.model,
        "max_tokens": req.max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if target.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": req.prompt}]
    else:
        body["prompt"] = req.prompt
    if req.priority is not None:
        body["priority"] = req.priority
    return body


def _chunk_text(chunk: dict[str, Any]) -> str:
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return (delta.get("content") or "") + (delta.get("reasoning_content") or "")
    return choice.get("text") or ""


def _read_usage(obs: Observation, usage: dict[str, Any]) -> None:
    obs.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    obs.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    obs.cached_tokens = int(details.get("cached_tokens") or 0)


def _parse_predicted(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _stream_one(client: httpx.AsyncClient, target: Target, obs: Observation, clock: _Clock) -> None:
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    async with client.stream(
        "POST", target.url.rstrip("/") + target.path, json=request_body(target, obs.request), headers=headers
    ) as resp:
        obs.predicted_tokens = _parse_predicted(resp.headers.get(PREDICTED_HEADER))
        if resp.status_code != 200:
            body = (await resp.aread()).decode(errors="replace")
            obs.error = f"HTTP {resp.status_code}: {body[:300]}"
            return
        done = False
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                obs.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                return
            if _chunk_text(chunk):
                obs.chunk_times.append(clock.now())
            if chunk.get("usage"):
                _read_usage(obs, chunk["usage"])
        if not done:
            obs.error = "stream ended without [DONE]"
        elif not obs.chunk_times and obs.output_tokens:
            obs.error = "no content chunk although tokens were generated"


class _Clock:
    """Seconds since the run's start, on a monotonic clock."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0


async def _send_at(client: httpx.AsyncClient, target: Target, req: PlannedRequest, clock: _Clock) -> Observation:
    await asyncio.sleep(max(0.0, req.arrival_s - clock.now()))
    obs = Observation(request=req, sent_s=clock.now())
    try:
        await asyncio.wait_for(_stream_one(client, target, obs, clock), timeout=target.timeout_s)
    except TimeoutError:
        obs.error = f"timed out after {target.timeout_s:.0f} s"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        obs.error = f"{type(exc).__name__}: {exc}"
    obs.end_s = clock.now()
    return obs


async def replay(
    plan: Sequence[PlannedRequest],
    target: Target,
    *,
    client: httpx.AsyncClient | None = None,
    progress: bool = True,
    label: str = "bench",
) -> list[Observation]:
    """Send every planned request at its arrival offset; return observations in plan order.

    Never raises for a failed request: its `error` says what happened.
    """
    own_client = client is None
    if client is None:
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=30.0, read=None, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
    clock = _Clock()
    try:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("errors {task.fields[errors]}"), TimeElapsedColumn(),
            disable=not progress, transient=False,
        ) as bar:  # fmt: skip
            task = bar.add_task(label, total=len(plan), errors=0)
            errors = 0

            async def tracked(req: PlannedRequest) -> Observation:
                nonlocal errors
                obs = await _send_at(client, target, req, clock)
                errors += obs.error is not None
                bar.update(task, advance=1, errors=errors)
                return obs

            return list(await asyncio.gather(*(tracked(r) for r in plan)))
    finally:
        if own_client:
            await client.aclose()
