"""An in-process fake of an OpenAI-compatible engine, for tests of predictors and the eval.

`FakeEngine` is an `httpx.MockTransport` handler: prediction queries (non-streaming,
with logprobs) get `answer` tokenized one character per token with the given top
alternatives; streaming requests get `output_tokens` tokens and a usage chunk that
reports cached tokens as a real engine with a 128-token block cache would.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

BLOCK = 128
END = "<|im_end|>"


@dataclass
class FakeEngine:
    #: Answer text of prediction queries, or a function of the request body.
    answer: str | Callable[[dict[str, Any]], str] = "150"
    #: Extra top alternatives at every answer position (token → logprob).
    alternatives: dict[str, float] = field(default_factory=lambda: {"2": -2.0, END: -3.0})
    output_tokens: int = 40
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    seen_prompts: list[str] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append({"path": request.url.path, "body": body})
        if self.status != 200:
            return httpx.Response(self.status, json={"error": {"message": "fake failure"}})
        prompt = self._prompt(body)
        usage = {
            "prompt_tokens": len(prompt.split()),
            "completion_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": self._cached(prompt)},
        }
        self.seen_prompts.append(prompt)
        if body.get("stream"):
            return self._stream(usage)
        text = self.answer(body) if callable(self.answer) else self.answer
        usage["completion_tokens"] = len(text) + 1
        tokens = [*text, END]
        if request.url.path.endswith("/chat/completions"):
            content = [
                {"token": t, "logprob": -0.1, "top_logprobs": [{"token": t, "logprob": -0.1}]
                 + [{"token": k, "logprob": v} for k, v in self.alternatives.items() if k != t]}
                for t in tokens
            ]
            choice = {"message": {"role": "assistant", "content": text}, "logprobs": {"content": content}}
        else:
            logprobs = {
                "tokens": tokens,
                "token_logprobs": [-0.1] * len(tokens),
                "top_logprobs": [{t: -0.1, **{k: v for k, v in self.alternatives.items() if k != t}} for t in tokens],
            }
            choice = {"text": text, "logprobs": logprobs}
        return httpx.Response(200, json={"choices": [{**choice, "finish_reason": "stop"}], "usage": usage})

    @staticmethod
    def _prompt(body: dict[str, Any]) -> str:
        if "messages" in body:
            return "\n".join(str(m.get("content")) for m in body["messages"])
        return str(body.get("prompt"))

    def _cached(self, prompt: str) -> int:
        """Whole 128-word blocks shared with an earlier prompt (words stand in for tokens)."""
        words = prompt.split()
        best = 0
        for seen in self.seen_prompts:
            other = seen.split()
            common = next((i for i, (a, b) in enumerate(zip(words, other)) if a != b), min(len(words), len(other)))
            best = max(best, common)
        return min(best, len(words) - 1) // BLOCK * BLOCK if words else 0

    def _stream(self, usage: dict[str, Any]) -> httpx.Response:
        usage = {**usage, "completion_tokens": self.output_tokens}
        chunks = [{"choices": [{"delta": {"content": "x "}, "finish_reason": None}]} for _ in range(self.output_tokens)]
        chunks.append({"choices": [{"delta": {}, "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": usage})
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})
