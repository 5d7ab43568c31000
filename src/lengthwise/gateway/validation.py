"""Checks on the request fields the gateway itself reads; every other field is the backend's to judge.

Also what predictors may read of a request: a field the backend ignores must not change
a prediction, or a client could set it to buy priority.
"""

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


#: The output caps of a request body; predictors see only the one the backend enforces.
_CAPS = ("max_tokens", "max_completion_tokens")


def enforced_max_tokens(endpoint: Endpoint, body: dict[str, Any]) -> int | None:
    """The output cap the backend applies (None: no positive cap given).

    vLLM's completions API reads only `max_tokens` (`max_completion_tokens` is ignored: a
    client sending `max_tokens: 300, max_completion_tokens: 1` gets up to 300 tokens); its
    chat API reads `max_completion_tokens or max_tokens`.
    """
    value = body.get("max_completion_tokens") or body.get("max_tokens") if endpoint == "chat" \
        else body.get("max_tokens")
    return value if _is_int(value) and value > 0 else None


def prediction_body(endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
    """The body predictors see (`LengthRequest.body`): the client's, with the enforced cap as its
    only cap, under `max_tokens` (a shallow copy: prompts are not copied)."""
    if not any(name in body for name in _CAPS):
        return body
    view = {name: value for name, value in body.items() if name not in _CAPS}
    cap = enforced_max_tokens(endpoint, body)
    if cap is not None:
        view["max_tokens"] = cap
    return view
