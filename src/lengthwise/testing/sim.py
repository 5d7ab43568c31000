"""Small simulator workloads written inline in tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lengthwise.sim.workload import Workload


def small_workload(
    arrival: Sequence[float], prompt: Sequence[int], output: Sequence[int], predicted: Sequence[float] | None = None,
    fallback: Sequence[float] | None = None, conversations: Sequence[int] | None = None,
) -> Workload:  # fmt: skip
    """A workload from plain lists; predictions default to the true output lengths."""
    out = np.asarray(output, dtype=np.int64)
    return Workload(
        np.asarray(arrival, dtype=float), np.asarray(prompt, dtype=np.int64), out,
        out.astype(float) if predicted is None else np.asarray(predicted, dtype=float),
        fallback=None if fallback is None else np.asarray(fallback, dtype=float),
        conversations=None if conversations is None else np.asarray(conversations, dtype=np.int64),
    )  # fmt: skip
