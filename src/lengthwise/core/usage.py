"""Reading the `usage` object of an OpenAI-style response (vLLM with --enable-prompt-tokens-details)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cached_tokens(usage: Mapping[str, Any] | None) -> int | None:
    """`usage.prompt_tokens_details.cached_tokens`: prompt tokens the prefix cache served.

    None when the engine reports no details; 0 when it reports details without a count.
    """
    details = usage.get("prompt_tokens_details") if isinstance(usage, Mapping) else None
    if not isinstance(details, Mapping):
        return None
    value = details.get("cached_tokens")
    return int(value) if isinstance(value, int | float) else 0
