"""Baselines behind the predictor interface: constant (= FCFS), prompt length, oracle."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.prompt import read_prompt
from lengthwise.predict.self_query.query import UnpredictableRequest
from lengthwise.core.tokens import FALLBACK_TOKENS


def prompt_hash(request: LengthRequest) -> str:
    """A stable key for a request's prompt (roles and texts only), for oracle lookups."""
    body = request.body
    if request.endpoint == "chat":
        key = [[m.get("role"), m.get("content")] for m in body.get("messages") or [] if isinstance(m, dict)]
    else:
        key = body.get("prompt")
    blob = json.dumps([request.endpoint, key], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ConstantPredictor(Predictor):
    """The same length for every request: ordered by it, a scheduler is FCFS."""

    def __init__(self, tokens: float = FALLBACK_TOKENS, name: str = "constant") -> None:
        self.tokens = float(tokens)
        self.name = name

    async def predict(self, request: LengthRequest) -> Prediction:
        return Prediction(self.tokens, self.name, raw=self.tokens)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """A constant learns nothing."""


class PromptLengthPredictor(Predictor):
    """Predicts `ratio` × prompt tokens (cl100k, offline; estimated beyond a few KB), at most the
    request's max_tokens: longer questions, longer answers.

    Its `prompt_tokens` feature is what a calibrator maps to output lengths.
    """

    def __init__(self, ratio: float = 1.0, fallback_tokens: float = FALLBACK_TOKENS, name: str = "prompt-length") -> None:
        self.ratio = ratio
        self.fallback_tokens = fallback_tokens
        self.name = name

    async def predict(self, request: LengthRequest) -> Prediction:
        try:
            tokens = read_prompt(request).tokens
        except UnpredictableRequest as exc:
            return Prediction(self.fallback_tokens, self.name, fallback_reason=str(exc))
        value = max(1.0, self.ratio * tokens)
        features = {"prompt_tokens": float(tokens)}
        if request.max_tokens is not None:  # the engine stops there, however long the prompt
            features["max_tokens"] = float(request.max_tokens)
            value = min(value, features["max_tokens"])
        return Prediction(value, self.name, raw=value, features=features)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Fixed heuristic; wrap in CalibratedPredictor to learn."""


class OraclePredictor(Predictor):
    """Knows the true lengths (by prompt hash): the upper bound for experiments."""

    def __init__(self, lengths: Mapping[str, float], default: float = FALLBACK_TOKENS, name: str = "oracle") -> None:
        self.lengths = dict(lengths)
        self.default = default
        self.name = name

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: float | str) -> OraclePredictor:
        """JSON {prompt_hash: tokens}, or JSONL with `prompt_hash` and `actual_tokens` (eval records)."""
        text = Path(path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and "prompt_hash" not in data:
            return cls({k: float(v) for k, v in data.items()}, **kwargs)  # type: ignore[arg-type]
        lengths = {}
        for line in text.splitlines():
            if line.strip():
                record = json.loads(line)
                lengths[record["prompt_hash"]] = float(record["actual_tokens"])
        return cls(lengths, **kwargs)  # type: ignore[arg-type]

    async def predict(self, request: LengthRequest) -> Prediction:
        key = prompt_hash(request)
        if key not in self.lengths:
            return Prediction(self.default, self.name, fallback_reason=f"prompt {key} not in the oracle")
        value = self.lengths[key]
        return Prediction(value, self.name, raw=value)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """The oracle's lengths are fixed in advance."""
