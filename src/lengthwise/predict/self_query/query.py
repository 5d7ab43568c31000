"""Build the self-prediction query from a real request, keeping its longest token prefix.

Chat: the postfix is appended to the last user message (its last text part), so the
rendered prompt is identical up to there; if the conversation ends with another
role, a user message carrying the postfix is added after it. Completions: the
postfix is appended to the prompt. Only the keys that shape the rendered prompt are
copied; sampling, streaming and tool options are not. The real request body is
never modified.
"""

from __future__ import annotations

import copy
from typing import Any

from lengthwise.predict.base import LengthRequest

#: Request keys that change the rendered prompt, so the query must keep them.
PROMPT_KEYS = (
    "model",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "documents",
)
ENDPOINT_PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


class UnpredictableRequest(ValueError):
    """The request can't be self-predicted; the message is the fallback reason."""


def _text_parts(content: Any) -> list[dict[str, Any]] | None:
    """The parts of a list content if all are text, else None."""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return content
    return None


def prompt_text(request: LengthRequest) -> str:
    """The request's prompt text (chat: all message texts joined), for heuristics and hashing.

    Raises UnpredictableRequest for input a predictor can't read.
    """
    body = request.body
    if request.endpoint == "completion":
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise UnpredictableRequest("prompt is not a single string (batched or token ids)")
        if not prompt.strip():
            raise UnpredictableRequest("empty prompt")
        return prompt
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise UnpredictableRequest("no messages")
    texts = []
    for message in messages:
        if not isinstance(message, dict):
            raise UnpredictableRequest("a message is not an object")
        content = message.get("content")
        if content is None and message.get("role") == "assistant" and message.get("tool_calls"):
            raise UnpredictableRequest("conversation has tool calls")
        if isinstance(content, str):
            texts.append(content)
        elif (parts := _text_parts(content)) is not None:
            texts.extend(str(p.get("text", "")) for p in parts)
        else:
            raise UnpredictableRequest("non-text message content")
    if not "".join(texts).strip():
        raise UnpredictableRequest("empty messages")
    return "\n".join(texts)


def check_predictable(request: LengthRequest) -> None:
    """Raise UnpredictableRequest for requests whose length one query can't stand for."""
    body = request.body
    if request.endpoint not in ENDPOINT_PATHS:
        raise UnpredictableRequest(f"unknown endpoint {request.endpoint!r}")
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise UnpredictableRequest("n > 1: several answers of different lengths")
    if body.get("tools") or body.get("functions"):
        raise UnpredictableRequest("request carries tools")
    if request.endpoint == "chat":
        for message in body.get("messages") or []:
            if isinstance(message, dict) and (message.get("role") in ("tool", "function") or message.get("tool_calls")):
                raise UnpredictableRequest("conversation has tool calls")
    prompt_text(request)


def _append_postfix(messages: list[dict[str, Any]], postfix: str) -> list[dict[str, Any]]:
    messages = copy.deepcopy(messages)
    last = messages[-1]
    if last.get("role") != "user":
        messages.append({"role": "user", "content": postfix.lstrip()})
    elif isinstance(last.get("content"), str):
        last["content"] += postfix
    else:
        last["content"][-1]["text"] = str(last["content"][-1].get("text", "")) + postfix
    return messages


def build_query(
    request: LengthRequest,
    postfix: str,
    *,
    model: str | None,
    max_tokens: int,
    top_logprobs: int,
    priority: int | None,
) -> dict[str, Any]:
    """The prediction query's body (for ENDPOINT_PATHS[request.endpoint]); raises UnpredictableRequest."""
    check_predictable(request)
    body = request.body
    query: dict[str, Any] = {k: copy.deepcopy(body[k]) for k in PROMPT_KEYS if k in body}
    if model is not None and "model" not in query:
        query["model"] = model
    query.update(temperature=0.0, max_tokens=max_tokens, stream=False, n=1)
    if request.endpoint == "chat":
        query["messages"] = _append_postfix(body["messages"], postfix)
        query.update(logprobs=True, top_logprobs=top_logprobs)
    else:
        query["prompt"] = prompt_text(request) + postfix
        query["logprobs"] = top_logprobs
    if priority is not None:
        query["priority"] = priority
    return query
