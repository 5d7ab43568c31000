"""Learning to rank prompts by output length: linear scorers with a ListMLE or a pairwise loss.

Fu et al. (2024) fine-tune a small LM with the listwise ListMLE loss so that its scores
order prompts by output length; only the order matters to a scheduler. Here the
scorer is linear on the same frozen features as the learned predictor (no GPU to
fine-tune a transformer on), trained offline by L-BFGS with L2 regularization:
`ListMLERanker` on random lists drawn from the training set (the baseline), and
`PairwiseRanker`, a logistic loss on score differences over the pairs whose order is
*known*: labels at the cap only say "at least this long", so two capped answers carry
no order and a capped one is longer only than an uncapped shorter one.

Scores are not lengths: `ScoreToLength` maps them monotonically onto the training
lengths' quantiles, so the ranker can stand behind the `Predictor` interface and
in a replay JSONL without changing its order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from lengthwise.predict.learned.rank_stage import LinearScorer


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


def known_pairs(lengths: np.ndarray, capped: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(shorter, longer) index arrays of the pairs whose order is known under censoring.

    i is known to be shorter than j when i finished (not capped) and lengths[i] < lengths[j]:
    j either finished longer or was cut at a cap above lengths[i].
    """
    y = np.asarray(lengths, dtype=np.float64)
    known = (y[:, None] < y[None, :]) & ~np.asarray(capped, dtype=bool)[:, None]
    return np.nonzero(known)


def pairwise_loss(
    w: np.ndarray, Z: np.ndarray, shorter: np.ndarray, longer: np.ndarray, penalty: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean logistic loss log(1 + exp(s_shorter - s_longer)) over the pairs, plus ½ Σ penalty·w², and gradient."""
    scores = Z @ w
    margin = scores[longer] - scores[shorter]
    loss = float(np.mean(np.logaddexp(0.0, -margin)))
    slope = -np.exp(-np.logaddexp(0.0, margin)) / len(margin)  # d loss / d margin = -sigmoid(-margin) / P
    grad_scores = np.bincount(longer, slope, len(scores)) - np.bincount(shorter, slope, len(scores))
    return loss + 0.5 * float(penalty @ (w * w)), Z.T @ grad_scores + penalty * w


def _standardized(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    scale[scale < 1e-9] = 1.0
    return (X - mean) / scale, mean, scale


class PairwiseRanker(LinearScorer):
    """A linear scorer trained on the known (censored) pairs with the logistic pairwise loss."""

    @classmethod
    def fit(
        cls, X: np.ndarray, lengths: np.ndarray, capped: np.ndarray, *, l2: float = 1e-2,
        penalty: np.ndarray | float = 1.0,
    ) -> PairwiseRanker:
        """`penalty` scales `l2` per column (e.g. less for a trusted pretrained score)."""
        Z, mean, scale = _standardized(X)
        shorter, longer = known_pairs(lengths, capped)
        if len(shorter) == 0:
            return cls(mean, scale, np.zeros(Z.shape[1]))
        column_l2 = l2 * np.broadcast_to(np.asarray(penalty, dtype=np.float64), (Z.shape[1],))
        result = minimize(
            pairwise_loss, np.zeros(Z.shape[1]), args=(Z, shorter, longer, column_l2), jac=True,
            method="L-BFGS-B", options={"maxiter": 500},
        )
        return cls(mean, scale, result.x)


class ListMLERanker(LinearScorer):
    """A linear scorer trained with ListMLE on random lists (the Fu et al.-style baseline)."""

    @classmethod
    def fit(
        cls, X: np.ndarray, y: np.ndarray, *, list_size: int = 32, lists: int = 4000, l2: float = 1e-3, seed: int = 0
    ) -> ListMLERanker:
        Z, mean, scale = _standardized(X)
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
