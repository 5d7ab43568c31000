"""A distribution over predicted lengths, read from the top logprobs of the answer's tokens.

The greedy answer of a small model is heavily quantized ("10", "100"); the top
logprobs at each digit position say how close the alternatives were. Qwen emits one
token per digit, so the number's distribution is enumerated by a beam over digit
sequences: at each position of the greedy number a digit alternative extends a
sequence and a non-digit alternative (end of answer, a space, a word) terminates it.
The top logprobs are conditioned on the greedy prefix; using them for the other
branches is the approximation that makes one query enough.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


#: Lengths at which the summary reports the CDF.
CDF_POINTS = (10, 30, 100, 300)


@dataclass(frozen=True)
class Position:
    """One generated token: the greedy choice and its top alternatives (token → logprob)."""

    greedy: str
    top: Mapping[str, float]


def positions_from_chat(logprobs: Mapping[str, Any] | None) -> list[Position]:
    """Chat `choices[0].logprobs` → positions."""
    positions = []
    for entry in (logprobs or {}).get("content") or []:
        top = {alt["token"]: alt["logprob"] for alt in entry.get("top_logprobs") or []}
        top.setdefault(entry["token"], entry["logprob"])
        positions.append(Position(entry["token"], top))
    return positions


def positions_from_completion(logprobs: Mapping[str, Any] | None) -> list[Position]:
    """Completions `choices[0].logprobs` → positions."""
    logprobs = logprobs or {}
    tokens = logprobs.get("tokens") or []
    greedy_lps = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops = logprobs.get("top_logprobs") or [{}] * len(tokens)
    positions = []
    for token, lp, top in zip(tokens, greedy_lps, tops, strict=False):
        top = dict(top or {})
        if lp is not None:
            top.setdefault(token, lp)
        positions.append(Position(token, top))
    return positions


@dataclass(frozen=True)
class LengthDistribution:
    """A discrete distribution over predicted lengths (values ascending, probs summing to 1).

    `mass` is the probability the enumeration covered before normalizing: low mass
    means the model mostly meant to say something else.
    """

    values: tuple[float, ...]
    probs: tuple[float, ...]
    mass: float = 1.0

    @classmethod
    def from_weights(cls, weights: Mapping[float, float]) -> LengthDistribution | None:
        total = sum(weights.values())
        if total <= 0:
            return None
        items = sorted(weights.items())
        return cls(tuple(v for v, _ in items), tuple(w / total for _, w in items), min(total, 1.0))

    def clipped(self, low: float, high: float) -> LengthDistribution:
        """Values clipped into [low, high] (answers can't be shorter or exceed max_tokens)."""
        merged: dict[float, float] = defaultdict(float)
        for value, prob in zip(self.values, self.probs, strict=True):
            merged[min(max(value, low), high)] += prob
        items = sorted(merged.items())
        return LengthDistribution(tuple(v for v, _ in items), tuple(p for _, p in items), self.mass)

    def mean(self) -> float:
        return float(np.dot(self.values, self.probs))

    def mean_log(self) -> float:
        """E[log(1 + value)]: the expectation that a few huge values can't dominate."""
        return float(np.dot(np.log1p(np.maximum(self.values, 0.0)), self.probs))

    def quantile(self, q: float) -> float:
        cdf = np.cumsum(self.probs)
        return float(self.values[min(int(np.searchsorted(cdf, q - 1e-12)), len(self.values) - 1)])

    def entropy(self) -> float:
        probs = np.asarray(self.probs)
        probs = probs[probs > 0]
        return float(-(probs * np.log(probs)).sum())

    def top(self) -> float:
        return float(self.values[int(np.argmax(self.probs))])

    def cdf(self, value: float) -> float:
        """P(predicted length <= value)."""
        return float(sum(p for v, p in zip(self.values, self.probs, strict=True) if v <= value))

    def summary(self) -> dict[str, float]:
        """The features a calibrator or a report uses: moments, quantiles, shape, and the
        CDF at a few lengths (how much the model leans to a 1-, 2- or 3-digit answer)."""
        return {
            "expect": self.mean(),
            "expect_log": math.expm1(self.mean_log()),
            "q10": self.quantile(0.1),
            "q50": self.quantile(0.5),
            "q90": self.quantile(0.9),
            "entropy": self.entropy(),
            "mass": self.mass,
            "p_top": max(self.probs),
            **{f"cdf_{t}": self.cdf(t) for t in CDF_POINTS},
        }

    def to_json(self, min_prob: float = 1e-4) -> dict[str, Any]:
        keep = [(v, p) for v, p in zip(self.values, self.probs, strict=True) if p >= min_prob]
        return {"values": [v for v, _ in keep], "probs": [round(p, 6) for _, p in keep], "mass": self.mass}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LengthDistribution | None:
        dist = cls.from_weights(dict(zip(data["values"], data["probs"], strict=True)))
        return None if dist is None else cls(dist.values, dist.probs, data.get("mass", 1.0))


def _digits(token: str, leading: bool) -> str | None:
    """The digits a token contributes; a leading space is allowed only on the first digit."""
    text = token.lstrip(" ") if leading else token
    return text if text.isascii() and text.isdigit() else None


def number_distribution(positions: Sequence[Position], beam: int = 64) -> LengthDistribution | None:
    """Distribution of the first number in the answer, or None if the greedy answer has none.

    The beam walks the greedy number's positions plus the one after it; sequences
    still open past the last observed position are taken as ended there.
    """
    start = next((i for i, p in enumerate(positions) if _digits(p.greedy, leading=True)), None)
    if start is None:
        return None
    end = start
    while end < len(positions) and _digits(positions[end].greedy, leading=end == start):
        end += 1
    states: dict[str, float] = {"": 0.0}
    finished: dict[float, float] = defaultdict(float)
    for i in range(start, min(end + 1, len(positions))):
        grown: dict[str, float] = defaultdict(lambda: -math.inf)
        for prefix, lp in states.items():
            for token, token_lp in positions[i].top.items():
                digits = _digits(token, leading=not prefix)
                if digits is not None:
                    grown[prefix + digits] = float(np.logaddexp(grown[prefix + digits], lp + token_lp))
                elif prefix:
                    finished[float(prefix)] += math.exp(lp + token_lp)
        states = dict(sorted(grown.items(), key=lambda kv: kv[1], reverse=True)[:beam])
    for prefix, lp in states.items():
        finished[float(prefix)] += math.exp(lp)
    return LengthDistribution.from_weights(finished)


def label_distribution(positions: Sequence[Position], labels: Mapping[str, float]) -> LengthDistribution | None:
    """Distribution over a scale's labels (e.g. "1".."5" → lengths) at the first label position."""
    for position in positions:
        if position.greedy.strip() in labels:
            weights: dict[float, float] = defaultdict(float)
            for token, lp in position.top.items():
                if token.strip() in labels:
                    weights[labels[token.strip()]] += math.exp(lp)
            return LengthDistribution.from_weights(weights)
    return None
