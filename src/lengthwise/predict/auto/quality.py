"""How well a predictor ranks the actual lengths, over its last W completed requests.

The measure is Kendall's tau-b between predicted and actual output tokens with a
jackknife confidence interval (`lengthwise.core.stats`).

Pure: no I/O, no clock. The tau is computed lazily, once per change of the window.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from lengthwise.core.stats import RankQuality, kendall_tau_ci


class QualityWindow:
    """The last `size` (predicted, actual) pairs of one predictor, and their rank quality."""

    def __init__(self, size: int = 200, confidence: float = 0.95) -> None:
        if size < 3:
            raise ValueError("a quality window needs at least 3 requests")
        if not 0 < confidence < 1:
            raise ValueError("confidence must be between 0 and 1")
        self.size = size
        self.confidence = confidence
        self._pairs: deque[tuple[float, float]] = deque(maxlen=size)
        self._cached: RankQuality | None = None

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, predicted: float, actual: float) -> None:
        """Record one completed request; non-finite values are ignored (they rank nothing)."""
        if math.isfinite(predicted) and math.isfinite(actual):
            self._pairs.append((predicted, actual))
            self._cached = None

    def pairs(self) -> list[tuple[float, float]]:
        """The window's (predicted, actual) pairs, oldest first: the evidence to persist."""
        return list(self._pairs)

    def extend(self, pairs: Iterable[tuple[float, float]]) -> None:
        """Record many pairs (restored evidence); as with `add`, only the last `size` stay."""
        for predicted, actual in pairs:
            self.add(predicted, actual)

    def quality(self) -> RankQuality:
        """Tau-b and interval of the window, recomputed only after it changed."""
        if self._cached is None:
            pairs = np.array(self._pairs, dtype=float).reshape(-1, 2)
            self._cached = kendall_tau_ci(pairs[:, 0], pairs[:, 1], self.confidence)
        return self._cached
