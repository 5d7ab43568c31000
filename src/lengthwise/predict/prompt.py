"""A request's prompt as predictors read it: a bounded part of it, read once per request.

A prompt may be megabytes (the gateway takes bodies up to 8 MiB); tokenizing or
featurizing all of it froze the gateway for a minute. Predictors read only its `head`
(the embedding reads 128 tokens, about 600 characters; TF-IDF reads the head), and its
token count is exact up to a few KB and estimated beyond (`core.tokens.estimate_tokens`).
The predictors of one request share one `Prompt`, kept in `LengthRequest.derived`, so
that its tokens are counted once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from lengthwise.core.tokens import estimate_tokens
from lengthwise.predict.base import LengthRequest
from lengthwise.predict.self_query.query import prompt_text

#: Characters of the prompt that its features read.
HEAD_CHARS = 4096


@dataclass(frozen=True)
class Prompt:
    """The first HEAD_CHARS characters of a request's prompt text, its length and its tokens."""

    head: str
    chars: int
    tokens: int

    @property
    def key(self) -> str:
        """Tells prompts apart (a hash of the head, and the length) without reading all of a long one."""
        digest = hashlib.blake2b(self.head.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
        return f"{digest}-{self.chars}"


def read_prompt(request: LengthRequest) -> Prompt:
    """The request's `Prompt`, computed on first use; raises UnpredictableRequest for a prompt
    that is not text (as `prompt_text` does)."""
    prompt = request.derived.get("prompt")
    if prompt is None:
        text = prompt_text(request)
        prompt = request.derived["prompt"] = Prompt(text[:HEAD_CHARS], len(text), estimate_tokens(text))
    return prompt
