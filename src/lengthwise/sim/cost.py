"""Step-time cost models: how long one engine step takes for what it computes.

A step computes `num_tokens` tokens for `num_seqs` sequences: decodes (one token
each, attending to `decode_ctx` context tokens in all) and prefill chunks
(`(chunk, already_computed)` pairs). Every model is affine in `decode_ctx` for a
fixed batch, which lets the engine advance many identical decode steps at once.

- `ProfiledCost`: GPU building blocks measured on an H200
  (``h200_llama3_8b_profile.json``): step = layers · (gemm(T) + attention)
  + lm_head(num_seqs) + a framework overhead the profile does not measure.
- `LinearCost`: coefficients fitted on a real engine by `lengthwise sim profile`.
- `ConstantCost`: every step takes the same time (the OS-textbook examples).
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Chunks = Sequence[tuple[int, int]]


class CostModel(ABC):
    """Seconds per engine step."""

    #: Bytes of KV cache one token holds, where the profile names the model's shape
    #: (what a prefill instance sends a decode instance per prompt token); None if unknown.
    kv_bytes_per_token: float | None = None

    @abstractmethod
    def decode_affine(self, num_decode: int) -> tuple[float, float]:
        """(base, slope): a step of `num_decode` decodes and nothing else takes base + slope · decode_ctx."""

    @abstractmethod
    def step_time(self, num_tokens: int, num_seqs: int, decode_ctx: int, prefill: Chunks) -> float:
        """Seconds for one step; `num_tokens` counts decodes and prefill chunk tokens."""

    def ideal_latency(self, prompt: np.ndarray, output: np.ndarray, token_budget: int) -> np.ndarray:
        """Each request's E2E latency alone on an idle engine (for slowdowns)."""
        prompt = np.asarray(prompt, dtype=np.int64)
        output = np.asarray(output, dtype=np.int64)
        prefill = {p: self._prefill_alone(int(p), token_budget) for p in np.unique(prompt)}
        base, slope = self.decode_affine(1)
        n = np.maximum(output - 1, 0).astype(float)
        # decode step g (1..n) attends to prompt + g tokens.
        decode = n * (base + slope * prompt) + slope * n * (n + 1) / 2
        return np.fromiter((prefill[p] for p in prompt), dtype=float, count=prompt.size) + decode

    def _prefill_alone(self, prompt: int, budget: int) -> float:
        done, t = 0, 0.0
        while done < prompt:
            chunk = min(budget, prompt - done)
            t += self.step_time(chunk, 1, 0, ((chunk, done),))
            done += chunk
        return t


def causal_pairs(chunk: int, done: int) -> float:
    """Attention query-key pairs of a prefill chunk after `done` cached tokens."""
    return chunk * done + chunk * (chunk + 1) / 2


@dataclass(frozen=True)
class ConstantCost(CostModel):
    step_s: float = 1.0

    def decode_affine(self, num_decode: int) -> tuple[float, float]:
        return self.step_s, 0.0

    def step_time(self, num_tokens: int, num_seqs: int, decode_ctx: int, prefill: Chunks) -> float:
        return self.step_s


@dataclass(frozen=True)
class LinearCost(CostModel):
    """step = c0 + c_token·tokens + c_seq·seqs + c_ctx·decode_ctx + c_pair·prefill attention pairs."""

    c0: float
    c_token: float
    c_seq: float
    c_ctx: float
    c_pair: float

    FEATURES = ("c0", "c_token", "c_seq", "c_ctx", "c_pair")

    def decode_affine(self, num_decode: int) -> tuple[float, float]:
        return self.c0 + (self.c_token + self.c_seq) * num_decode, self.c_ctx

    def step_time(self, num_tokens: int, num_seqs: int, decode_ctx: int, prefill: Chunks) -> float:
        pairs = sum(causal_pairs(c, d) for c, d in prefill)
        return self.c0 + self.c_token * num_tokens + self.c_seq * num_seqs + self.c_ctx * decode_ctx + self.c_pair * pairs

    @staticmethod
    def features(num_tokens: int, num_seqs: int, decode_ctx: int, prefill: Chunks) -> list[float]:
        return [1.0, num_tokens, num_seqs, decode_ctx, sum(causal_pairs(c, d) for c, d in prefill)]

    @classmethod
    def fit(cls, rows: Sequence[Sequence[float]], seconds: Sequence[float]) -> LinearCost:
        """Non-negative least squares on relative error (every step counts the same)."""
        from scipy.optimize import nnls

        x, y = np.asarray(rows, dtype=float), np.asarray(seconds, dtype=float)
        if len(y) < len(cls.FEATURES):
            raise ValueError(f"need at least {len(cls.FEATURES)} samples to fit a cost model, got {len(y)}")
        w = 1.0 / np.maximum(y, 1e-9)
        scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
        coef, _ = nnls(x * w[:, None] / scale, y * w)
        return cls(*(coef / scale))


class ProfiledCost(CostModel):
    """Step time from per-layer GPU measurements (the H200 profile)."""

    def __init__(self, profile: dict[str, Any], overhead_s: float = 0.001) -> None:
        self.layers = int(profile["layers"])
        self.overhead_s = overhead_s
        gemm = sorted((int(k), float(v)) for k, v in profile["gemm_ms_per_layer"].items())
        head = sorted((int(k), float(v)) for k, v in profile["lm_head_ms"].items())
        self._gemm_x, self._gemm_y = map(np.array, zip(*gemm, strict=True))
        self._head_t, self._head_ms = map(np.array, zip(*head, strict=True))
        # Decode attention per layer ~ a + b·(batch · context): memory-bound KV reads.
        dec = [(int(k.split("x")[0]) * int(k.split("x")[1]), float(v)) for k, v in profile["decode_attn_ms_per_layer"].items()]
        self._dec_a, self._dec_b = _fit_affine([d[0] for d in dec], [d[1] for d in dec])
        # Causal prefill attention per layer ~ a + b·(query-key pairs).
        pre = [(causal_pairs(int(k), 0), float(v)) for k, v in profile["prefill_attn_ms_per_layer"].items()]
        self._pre_a, self._pre_b = _fit_affine([p[0] for p in pre], [p[1] for p in pre])
        self.device = str(profile.get("device", "?"))
        if all(k in profile for k in ("kv_heads", "head_dim", "kv_dtype_bytes")):  # K and V, every layer
            self.kv_bytes_per_token = float(
                2 * self.layers * int(profile["kv_heads"]) * int(profile["head_dim"]) * int(profile["kv_dtype_bytes"])
            )

    @functools.lru_cache(maxsize=16384)  # noqa: B019 - a few thousand distinct sizes per run
    def _gemm_ms(self, tokens: int) -> float:
        return _interp(tokens, self._gemm_x, self._gemm_y)

    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def _head_ms_of(self, seqs: int) -> float:
        return _interp(seqs, self._head_t, self._head_ms)

    @functools.lru_cache(maxsize=4096)  # noqa: B019
    def decode_affine(self, num_decode: int) -> tuple[float, float]:
        base_ms = self.layers * (self._gemm_ms(num_decode) + self._dec_a) + self._head_ms_of(num_decode)
        return base_ms / 1000 + self.overhead_s, self.layers * self._dec_b / 1000

    def step_time(self, num_tokens: int, num_seqs: int, decode_ctx: int, prefill: Chunks) -> float:
        num_decode = num_seqs - len(prefill)
        attn = (self._dec_a + self._dec_b * decode_ctx) if num_decode else 0.0
        attn += sum(self._pre_a + self._pre_b * causal_pairs(c, d) for c, d in prefill)
        ms = self.layers * (self._gemm_ms(num_tokens) + attn) + self._head_ms_of(num_seqs)
        return ms / 1000 + self.overhead_s


def _fit_affine(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least squares on relative error, both coefficients kept non-negative."""
    from scipy.optimize import nnls

    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    w = 1.0 / ya
    scale = xa.max()
    (a, b), _ = nnls(np.column_stack([w, xa / scale * w]), ya * w)
    return float(a), float(b / scale)


def _interp(x: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Piecewise-linear in the table, linear extrapolation beyond its last point."""
    if x <= xs[-1]:
        return float(np.interp(x, xs, ys))
    slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
    return float(ys[-1] + slope * (x - xs[-1]))


def load_cost_model(path: Path, overhead_s: float | None = None) -> CostModel:
    """A cost model from a JSON profile: the GPU building blocks or a fitted `lengthwise sim profile`."""
    data = json.loads(Path(path).read_text())
    if data.get("kind") == "linear":
        c = data["coef"]
        missing = [f for f in LinearCost.FEATURES if f not in c]
        if missing:
            raise ValueError(f"{path}: linear profile lacks {missing}")
        return LinearCost(**{f: float(c[f]) for f in LinearCost.FEATURES})
    if "gemm_ms_per_layer" in data:
        return ProfiledCost(data, **({} if overhead_s is None else {"overhead_s": overhead_s}))
    raise ValueError(f"{path}: not a cost profile (no 'kind': 'linear' and no 'gemm_ms_per_layer')")

