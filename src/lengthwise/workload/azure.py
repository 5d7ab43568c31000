"""The Azure LLM inference trace 2023 (Splitwise, ISCA 2024; CC-BY): arrivals and token counts.

Columns: ``arrived_at`` (s), ``num_prefill_tokens``, ``num_decode_tokens``. The
conversation trace holds 19,366 requests over one hour; longer runs tile it. The
package ships it (gzip-compressed); any other trace in this format can be passed by path.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from lengthwise.core.data import AZURE_CONV_2023, packaged
from lengthwise.workload.arrivals import tile_arrivals

COLUMNS = ("arrived_at", "num_prefill_tokens", "num_decode_tokens")


def _open(path: Path) -> IO[str]:
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


@dataclass(frozen=True)
class Trace:
    """Arrival offsets (s, from 0) and token counts, one row per request."""

    arrival: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival.size)


def load_azure(path: Path | None = None, n: int | None = None) -> Trace:
    """The trace (default: the shipped conversation trace; a .csv or .csv.gz path) in arrival order.

    With `n` beyond its length, copies follow one another in time.
    """
    path = Path(path) if path is not None else packaged(AZURE_CONV_2023)
    if not path.exists():
        raise FileNotFoundError(f"Azure trace not found at {path}")
    with _open(path) as f:
        header = f.readline().strip().split(",")
        if list(header[:3]) != list(COLUMNS):
            raise ValueError(f"{path}: expected columns {COLUMNS}, found {header}")
        data = np.loadtxt(f, delimiter=",", usecols=(0, 1, 2), ndmin=2)
    data = data[np.argsort(data[:, 0], kind="stable")]
    arrival = data[:, 0] - data[0, 0]
    prompt = data[:, 1].astype(np.int64)
    output = np.maximum(data[:, 2].astype(np.int64), 1)
    if n is not None:
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        idx = np.arange(n) % arrival.size
        return Trace(tile_arrivals(arrival, n), prompt[idx], output[idx])
    return Trace(arrival, prompt, output)
