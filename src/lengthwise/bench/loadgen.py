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

from lengthwise.core.headers import PREDICTED_TOKENS, PREDICTOR
from lengthwise.core.records import RequestRecord
from lengthwise.bench.plan import PlannedRequest
from lengthwise.core.sse import sse_data
from lengthwise.core.usage import cached_tokens

Endpoint = Literal["chat", "completions"]


@dataclass
class _Stream:
    """What the client sees of one request while it streams; times on the run's clock."""

    record: RequestRecord
    token_times: list[float] = field(default_factory=list)
    first_chunk_time: float | None = None

    def finish(self, now: float) -> RequestRecord:
        rec = self.record
        rec.finish_time = now
        # A reply with no text at all (e.g. EOS first) still got its first "token" with its first chunk.
        rec.first_token_time = self.token_times[0] if self.token_times else self.first_chunk_time
        rec.itl = RequestRecord.itl_from_token_times(self.token_times)
        if rec.error is None and rec.first_token_time is None:
            rec.error = "the stream carried no choices"
        return rec


@dataclass(frozen=True)
class Target:
    """Where and how to send: server root URL, model, endpoint kind, bearer key, per-request timeout."""

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
    if req.ignore_eos:
        body["ignore_eos"] = True
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


def _read_usage(rec: RequestRecord, usage: dict[str, Any]) -> None:
    rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    rec.output_tokens = int(usage.get("completion_tokens") or 0)
    rec.cached_tokens = cached_tokens(usage)


def _parse_predicted(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def _stream_one(client: httpx.AsyncClient, target: Target, req: PlannedRequest, st: _Stream, clock: _Clock) -> None:
    rec = st.record
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    url = target.url.rstrip("/") + target.path
    async with client.stream("POST", url, json=request_body(target, req), headers=headers) as resp:
        rec.predicted_tokens = _parse_predicted(resp.headers.get(PREDICTED_TOKENS))
        rec.predictor = resp.headers.get(PREDICTOR)
        if resp.status_code != 200:
            body = (await resp.aread()).decode(errors="replace")
            rec.error = f"HTTP {resp.status_code}: {body[:300]}"
            return
        async for data in sse_data(resp):
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if "error" in chunk:
                rec.error = f"stream error: {json.dumps(chunk['error'])[:300]}"
                return
            now = clock.now()
            if chunk.get("choices"):
                st.first_chunk_time = st.first_chunk_time or now
            if _chunk_text(chunk):
                st.token_times.append(now)
            if chunk.get("usage"):
                _read_usage(rec, chunk["usage"])
        rec.error = "the stream ended without [DONE]"


class _Clock:
    """Seconds since the run's start, on a monotonic clock."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self.t0


async def _send_at(client: httpx.AsyncClient, target: Target, req: PlannedRequest, clock: _Clock) -> RequestRecord:
    await asyncio.sleep(max(0.0, req.arrival_s - clock.now()))
    st = _Stream(RequestRecord(id=req.id, arrival=clock.now()))
    try:
        await asyncio.wait_for(_stream_one(client, target, req, st, clock), timeout=target.timeout_s)
    except TimeoutError:
        st.record.error = f"timed out after {target.timeout_s:.0f} s"
    except (httpx.HTTPError, json.JSONDecodeError, OSError) as exc:
        st.record.error = f"{type(exc).__name__}: {exc}"
    return st.finish(clock.now())


async def replay(
    plan: Sequence[PlannedRequest],
    target: Target,
    *,
    client: httpx.AsyncClient | None = None,
    progress: bool = True,
    label: str = "bench",
) -> list[RequestRecord]:
    """Send every planned request at its arrival offset; return records in plan order.

    Times are seconds after the run's start; `arrival` is when the request was sent.
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

            async def tracked(req: PlannedRequest) -> RequestRecord:
                nonlocal errors
                rec = await _send_at(client, target, req, clock)
                errors += rec.error is not None
                bar.update(task, advance=1, errors=errors)
                return rec

            return list(await asyncio.gather(*(tracked(r) for r in plan)))
    finally:
        if own_client:
            await client.aclose()
