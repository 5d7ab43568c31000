"""Reading and comparing OpenAI-style answers in tests: the request body, the answer's text, its events,
and its bytes with what differs between two requests for the same answer masked."""

from __future__ import annotations

import json
import re
from typing import Any

from lengthwise.predict.base import Endpoint


def completion_path(endpoint: Endpoint) -> str:
    return "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"


def completion_body(endpoint: Endpoint, model: str, text: str, max_tokens: int, stream: bool,
                    **extra: Any) -> dict[str, Any]:
    """A request for `text` (a user message, or a completions prompt); a stream asks for its usage."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": stream, **extra}
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def masked(raw: bytes) -> bytes:
    """`raw` with what differs between two requests for the same answer masked: the id, `created`,
    and the prompt's cache details (a preempted answer's first run was aborted and reported none)."""
    raw = re.sub(rb'"id":"[^"]*"', b'"id":"X"', raw)
    raw = re.sub(rb'"prompt_tokens_details":(null|\{[^}]*\})', b'"prompt_tokens_details":null', raw)
    return re.sub(rb'"created":\d+', b'"created":0', raw)


def sse_events(raw: bytes) -> list[Any]:
    """The `data:` payloads of a whole SSE body, parsed; "[DONE]" as the string."""
    return [json.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"
            for line in raw.split(b"\n\n") if line.startswith(b"data: ")]


def answer_text(endpoint: Endpoint, raw: bytes, stream: bool) -> str:
    """The answer's text, from a plain body or from a stream's chunks."""
    if not stream:
        choice = json.loads(raw)["choices"][0]
        return choice["message"]["content"] if endpoint == "chat" else choice["text"]
    return "".join((c["delta"].get("content") or "") if endpoint == "chat" else c["text"]
                   for e in sse_events(raw) if e != "[DONE]" and "choices" in e for c in e["choices"])


def answer_usage(raw: bytes, stream: bool) -> dict[str, Any]:
    """An answer's usage: the body's, or the stream's usage chunk (the last before [DONE])."""
    return sse_events(raw)[-2]["usage"] if stream else json.loads(raw)["usage"]
