"""Checks on the request fields the gateway itself reads; every other field is the backend's to judge."""

from __future__ import annotations

import json
from typing import Any

from lengthwise.gateway.errors import bad_request
from lengthwise.predict.base import Endpoint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_prompt(prompt: Any) -> bool:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list) or not prompt:
        return False
    return (
        all(isinstance(p, str) for p in prompt)
        or all(_is_int(p) for p in prompt)
        or all(isinstance(p, list) and all(_is_int(t) for t in p) for p in prompt)
    )


def parse_body(endpoint: Endpoint, raw: bytes) -> dict[str, Any]:
    """The request body as a dict; raises a 400 GatewayError saying what is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if "model" in body and not isinstance(body["model"], str):
        raise bad_request("'model' must be a string", "model")
    if endpoint == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty list", "messages")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise bad_request("each message must be an object with a string 'role'", "messages")
    elif not _is_prompt(body.get("prompt")):
        raise bad_request("'prompt' must be a string, a list of strings or a list of token ids", "prompt")
    if "stream" in body and not isinstance(body["stream"], bool | None):
        raise bad_request("'stream' must be a boolean", "stream")
    if body.get("stream_options") is not None and not isinstance(body["stream_options"], dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    for name in ("max_tokens", "max_completion_tokens", "n"):
        value = body.get(name)
        if value is not None and not (_is_int(value) and value >= (1 if name == "n" else 0)):
            raise bad_request(f"'{name}' must be a {'positive' if name == 'n' else 'non-negative'} integer", name)
    return body
