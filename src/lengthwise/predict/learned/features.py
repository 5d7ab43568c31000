"""Feature vectors for the learned predictor: prompt length, self-prediction, prompt embedding.

Blocks, in order: `prompt` (log prompt tokens), `self` (a presence flag and the
self-prediction's raw value and distribution summary, lengths in log space; zeros
when the wrapped predictor fell back or gave none), `embedding` (the prompt's
MiniLM vector). Lengths enter in log space because answer lengths are roughly
log-normal and the model is fit on log lengths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lengthwise.predict.base import Prediction

#: `Prediction.features` keys that hold lengths (entered as log1p).
SELF_LENGTH_KEYS = ("greedy", "expect", "expect_log", "q10", "q50", "q90")
#: Keys that are already on a unit scale.
SELF_SHAPE_KEYS = ("entropy", "mass", "p_top")
SELF_NAMES = ("self_present", "self_raw", *SELF_LENGTH_KEYS, *SELF_SHAPE_KEYS)


def self_vector(prediction: Prediction | None) -> np.ndarray:
    """The self-prediction block; zeros when there is no usable self-prediction."""
    out = np.zeros(len(SELF_NAMES), dtype=np.float64)
    if prediction is None or prediction.is_fallback:
        return out
    return self_vector_from(prediction.raw if prediction.raw is not None else prediction.tokens, prediction.features)


def self_vector_from(raw: float | None, features: Mapping[str, float]) -> np.ndarray:
    """The self-prediction block from a raw value and a features mapping (e.g. a JSONL record)."""
    out = np.zeros(len(SELF_NAMES), dtype=np.float64)
    if raw is None or not math.isfinite(raw):
        return out
    out[0] = 1.0
    out[1] = math.log1p(max(raw, 0.0))
    for i, key in enumerate(SELF_LENGTH_KEYS, start=2):
        value = features.get(key)
        out[i] = math.log1p(max(float(value), 0.0)) if _finite(value) else out[1]
    for i, key in enumerate(SELF_SHAPE_KEYS, start=2 + len(SELF_LENGTH_KEYS)):
        value = features.get(key)
        out[i] = float(value) if _finite(value) else 0.0
    return out


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@dataclass(frozen=True)
class Layout:
    """Which blocks a feature vector has; fixes the columns a saved model expects."""

    use_self: bool = True
    #: Width of the prompt embedding block (0: no embedding).
    embedding_dim: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        names = ("log_prompt_tokens",)
        if self.use_self:
            names += SELF_NAMES
        return names + tuple(f"emb{i}" for i in range(self.embedding_dim))

    @property
    def width(self) -> int:
        return len(self.names)

    def vector(self, prompt_tokens: int, self_block: np.ndarray, embedding: np.ndarray | None) -> np.ndarray:
        parts = [np.array([math.log1p(max(prompt_tokens, 0))])]
        if self.use_self:
            parts.append(self_block)
        if self.embedding_dim:
            if embedding is None or embedding.shape != (self.embedding_dim,):
                raise ValueError(f"expected a {self.embedding_dim}-d embedding")
            parts.append(embedding.astype(np.float64))
        return np.concatenate(parts)

    def to_json(self) -> dict[str, Any]:
        return {"use_self": self.use_self, "embedding_dim": self.embedding_dim}
