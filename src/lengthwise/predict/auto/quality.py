"""How well a predictor ranks the actual lengths, over its last W completed requests.

The measure is Kendall's tau-b between predicted and actual output tokens with a
jackknife confidence interval (`lengthwise.core.stats`). A prompt counts once: a pair
added under the key of a prompt already in the window replaces the older pair, since
the same prompt sent again (a benchmark's next round, a client's retry) adds no
evidence of ranking *different* prompts, yet would narrow the interval as if it did.

Pure: no I/O, no clock. The tau is computed lazily, once per change of the window.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence

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
        #: key → (predicted, actual), oldest first; pairs added without a key get a unique one.
        self._pairs: OrderedDict[object, tuple[float, float]] = OrderedDict()
        self._unkeyed = itertools.count()
        self._cached: RankQuality | None = None

    def __len__(self) -> int:
        return len(self._pairs)

    def add(self, predicted: float, actual: float, key: str | None = None) -> None:
        """Record one completed request (replacing the pair of the same prompt `key`, if any);
        non-finite values are ignored (they rank nothing)."""
        if not (math.isfinite(predicted) and math.isfinite(actual)):
            return
        slot: object = key if key is not None else next(self._unkeyed)
        self._pairs.pop(slot, None)
        self._pairs[slot] = (predicted, actual)
        while len(self._pairs) > self.size:
            self._pairs.popitem(last=False)
        self._cached = None

    def pairs(self) -> list[tuple[float, float]]:
        """The window's (predicted, actual) pairs, oldest first."""
        return list(self._pairs.values())

    def entries(self) -> list[tuple[float, float, str | None]]:
        """The window's (predicted, actual, prompt key or None) triples, oldest first: the evidence to persist."""
        return [(p, a, slot if isinstance(slot, str) else None) for slot, (p, a) in self._pairs.items()]

    def extend(self, entries: Iterable[Sequence[float | str | None]]) -> None:
        """Record many (predicted, actual[, key]) entries (restored evidence); as with `add`, only the last `size` stay."""
        for predicted, actual, *key in entries:
            self.add(float(predicted), float(actual), str(key[0]) if key and key[0] is not None else None)  # type: ignore[arg-type]

    def quality(self) -> RankQuality:
        """Tau-b and interval of the window, recomputed only after it changed."""
        if self._cached is None:
            pairs = np.array(self.pairs(), dtype=float).reshape(-1, 2)
            self._cached = kendall_tau_ci(pairs[:, 0], pairs[:, 1], self.confidence)
        return self._cached
