"""Ridge regression in log-length space, with per-column penalties and LOO model selection.

Why ridge: with a few hundred labelled completions and ~400 features, a linear model
on standardized features is what the data supports, and it refits from scratch in
well under a second, so the learned predictor can retrain on every batch of
completions. Per-column penalties let a few trusted columns (a pretrained score, the
prompt length) move freely while the embedding block is shrunk hard. The overall
shrinkage is picked by exact leave-one-out error, for every candidate at the cost
of one SVD, so no held-out data is spent on tuning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Overall shrinkage candidates (multiplying the per-column penalties).
SCALES = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)


@dataclass(frozen=True)
class LinearModel:
    """log1p(length) ≈ bias + ((x - mean) / scale) · weights."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    #: Leave-one-out RMSE in log space at the chosen shrinkage.
    loo_rmse: float = float("nan")

    def score(self, X: np.ndarray) -> np.ndarray:
        """Predicted log1p(length) for each row of X (or a single vector)."""
        return self.bias + ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.weights

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


def fit_ridge(
    X: np.ndarray, y: np.ndarray, penalty: np.ndarray | float = 1.0, scales: Sequence[float] = (1.0,)
) -> LinearModel:
    """min ||y - b - Zw||² + s Σ_j penalty_j w_j² on z-scored columns Z, s from `scales` by LOO.

    The intercept is unpenalized; constant columns get scale 1 and carry no weight.
    Dividing column j by sqrt(penalty_j) makes the penalty uniform, so one SVD gives
    the fit and the exact leave-one-out residuals r_i / (1 - h_ii) for every s.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = len(y)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    root = np.sqrt(np.maximum(np.broadcast_to(np.asarray(penalty, dtype=np.float64), (X.shape[1],)), 1e-9))
    bias = float(y.mean())
    U, S, Vt = np.linalg.svd((X - mean) / scale / root, full_matrices=False)
    Uty = U.T @ (y - bias)
    U2 = U**2
    best: tuple[float, float] | None = None
    for s in scales:
        shrink = S**2 / (S**2 + s)
        hat = U2 @ shrink + 1.0 / n  # + 1/n: the intercept (columns are centered)
        residual = (y - bias - U @ (shrink * Uty)) / np.maximum(1.0 - hat, 1e-9)
        loo = float(np.sqrt(np.mean(residual**2)))
        if best is None or loo < best[0]:
            best = (loo, s)
    assert best is not None, "scales must not be empty"
    loo, s = best
    weights = Vt.T @ (S / (S**2 + s) * Uty) / root
    return LinearModel(mean, scale, weights, bias, loo)
