"""The learning-to-rank baseline (after Fu et al. 2024): a prompt scorer trained with ListMLE.

Fu et al. fine-tune a small LM with the listwise ListMLE loss so that its scores
order prompts by output length; only the order matters to a scheduler. Here the
scorer is linear on the same frozen features as the learned predictor (no GPU to
fine-tune a transformer on), trained offline with ListMLE on random lists drawn
from the training set, with L2 regularization, by L-BFGS.

Scores are not lengths: `ScoreToLength` maps them monotonically onto the training
lengths' quantiles, so the ranker can stand behind the `Predictor` interface and
in a replay JSONL without changing its order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize


def listmle_loss(w: np.ndarray, Z: np.ndarray, lists: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """Mean ListMLE loss and gradient; each row of `lists` holds indices sorted by length, longest first."""
    scores = Z[lists] @ w  # (B, k)
    # Plackett-Luce: -s_i + log Σ_{j >= i} exp(s_j), summed over positions.
    tail_lse = np.flip(np.logaddexp.accumulate(np.flip(scores, axis=1), axis=1), axis=1)
    loss = float(np.sum(tail_lse - scores)) / len(lists)
    # d/ds_j of Σ_i log Σ_{m>=i} exp(s_m) = exp(s_j) Σ_{i<=j} exp(-tail_lse_i)
    inv = np.cumsum(np.exp(-tail_lse), axis=1)
    grad_scores = (np.exp(scores) * inv - 1.0) / len(lists)
    grad = np.einsum("bk,bkd->d", grad_scores, Z[lists])
    return loss + 0.5 * l2 * float(w @ w), grad + l2 * w


@dataclass(frozen=True)
class ListMLERanker:
    """score(x) = ((x - mean) / scale) · weights; higher means longer."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    def score(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.weights

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, *, list_size: int = 32, lists: int = 4000, l2: float = 1e-3, seed: int = 0
    ) -> ListMLERanker:
        X = np.asarray(X, dtype=np.float64)
        mean = X.mean(axis=0)
        scale = X.std(axis=0)
        scale[scale < 1e-9] = 1.0
        Z = (X - mean) / scale
        rng = np.random.default_rng(seed)
        k = min(list_size, len(y))
        drawn = np.stack([rng.choice(len(y), size=k, replace=False) for _ in range(lists)])
        # Longest first; ties broken at random (the draw order), as ListMLE assumes a total order.
        order = np.argsort(-np.asarray(y, dtype=np.float64)[drawn], axis=1, kind="stable")
        ordered = np.take_along_axis(drawn, order, axis=1)
        result = minimize(
            listmle_loss, np.zeros(X.shape[1]), args=(Z, ordered, l2), jac=True, method="L-BFGS-B",
            options={"maxiter": 300},
        )
        return cls(mean, scale, result.x)


@dataclass(frozen=True)
class ScoreToLength:
    """Monotone map from scores to lengths: a score's training quantile → that length quantile."""

    score_grid: np.ndarray
    length_grid: np.ndarray

    @classmethod
    def fit(cls, scores: np.ndarray, lengths: np.ndarray, points: int = 101) -> ScoreToLength:
        q = np.linspace(0, 1, points)
        return cls(np.quantile(scores, q), np.quantile(lengths, q))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(scores, self.score_grid, self.length_grid)
