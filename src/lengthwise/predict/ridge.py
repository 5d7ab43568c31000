"""Ridge regression in log-length space, with per-column penalties and LOO model selection.

Why ridge: with a few hundred labelled completions and ~400 features, a linear model
on standardized features is what the data supports; it fits in milliseconds, so the
learned predictor can refit from scratch on every retrain. Per-column penalties let
a few trusted columns (a pretrained score, the prompt length) move freely while the
embedding block is shrunk hard. The shrinkage is picked by exact leave-one-out error
(the hat-matrix shortcut), so no held-out data is spent on tuning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LinearModel:
    """log1p(length) ≈ bias + ((x - mean) / scale) · weights."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    #: Leave-one-out RMSE in log space at the chosen penalty (nan when not computed).
    loo_rmse: float = float("nan")

    @property
    def width(self) -> int:
        return len(self.weights)

    def score(self, X: np.ndarray) -> np.ndarray:
        """Predicted log1p(length) for each row of X (or a single vector)."""
        return self.bias + ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.weights

    def tokens(self, X: np.ndarray) -> np.ndarray:
        return np.expm1(np.maximum(self.score(X), 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "loo_rmse": None if np.isnan(self.loo_rmse) else self.loo_rmse,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinearModel:
        loo = data.get("loo_rmse")
        return cls(
            np.asarray(data["mean"], dtype=np.float64),
            np.asarray(data["scale"], dtype=np.float64),
            np.asarray(data["weights"], dtype=np.float64),
            float(data["bias"]),
            float("nan") if loo is None else float(loo),
        )


def fit_ridge(X: np.ndarray, y: np.ndarray, penalty: np.ndarray | float, *, loo: bool = False) -> LinearModel:
    """Ridge on z-scored columns: min ||y - b - Zw||² + Σ penalty_j w_j².

    Constant columns get scale 1 (they then carry no weight beyond the bias).
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    Z = (X - mean) / scale
    bias = float(y.mean())
    penalties = np.broadcast_to(np.asarray(penalty, dtype=np.float64), (X.shape[1],))
    gram = Z.T @ Z + np.diag(penalties + 1e-9)
    weights = np.linalg.solve(gram, Z.T @ (y - bias))
    loo_rmse = float("nan")
    if loo:
        # Leave-one-out residuals: r_i / (1 - h_ii), with the centering's 1/n added to h_ii.
        hat = np.einsum("ij,ji->i", Z, np.linalg.solve(gram, Z.T)) + 1.0 / len(y)
        residual = (y - bias - Z @ weights) / np.maximum(1.0 - hat, 1e-6)
        loo_rmse = float(np.sqrt(np.mean(residual**2)))
    return LinearModel(mean, scale, weights, bias, loo_rmse)


def fit_ridge_selected(
    X: np.ndarray, y: np.ndarray, base_penalty: np.ndarray, scales: Sequence[float] = (0.1, 0.3, 1, 3, 10, 30, 100)
) -> LinearModel:
    """The ridge fit, among `base_penalty * s` for s in `scales`, with the lowest LOO error."""
    fits = [fit_ridge(X, y, base_penalty * s, loo=True) for s in scales]
    return min(fits, key=lambda m: m.loo_rmse)
