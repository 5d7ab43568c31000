"""The Azure LLM inference trace 2023 (Splitwise, ISCA 2024; CC-BY): arrivals and token counts.

The package ships the conversation trace (gzip-compressed, columns ``arrived_at`` (s),
``num_prefill_tokens``, ``num_decode_tokens``): 19,366 requests over one hour; longer
runs tile it. Any other trace, in this format or Azure's own (``TIMESTAMP``,
``ContextTokens``, ``GeneratedTokens``), is read by `lengthwise.workload.trace`.
"""

from __future__ import annotations

from pathlib import Path

from lengthwise.core.data import AZURE_CONV_2023, packaged
from lengthwise.workload.trace import Trace, load_trace


def load_azure(path: Path | None = None, n: int | None = None) -> Trace:
    """The trace (default: the shipped conversation trace) in arrival order; with `n`, tiled or cut to `n` requests."""
    return load_trace(path if path is not None else packaged(AZURE_CONV_2023)).tiled(n)
