"""The learned predictor's pretrained stage trained on the serving model's own lengths.

`Pretrained` learns which prompts ask for long answers from another model's answers
(ShareGPT's recorded ones); its score is on that model's scale. `RankStage` stacks a
ranker trained on the embedded model's labelled lengths (`lengthwise predict learned
rank`) on top: a linear scorer over [proxy score, log prompt tokens, MiniLM
embedding] fit with a censored pairwise loss, then a censored log-normal calibration
(`distribution.Calibration`), so its `score` is this model's expected log length and
`sigma` its spread. Both stages answer `score(texts, dense)` alike, so the predictor
takes either. Saved as one .npz holding the proxy model too: no pickle.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.core.io import atomic_write_bytes
from lengthwise.predict.learned.distribution import Calibration
from lengthwise.predict.learned.pretrained import Pretrained


@dataclass(frozen=True)
class LinearScorer:
    """score(x) = ((x - mean) / scale) · weights; higher means longer."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray

    def score(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean) / self.scale) @ self.weights


def rank_rows(proxy_scores: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """The ranker's input rows: [proxy score, dense row (log prompt tokens, embedding)]."""
    return np.hstack([np.asarray(proxy_scores, dtype=np.float64)[:, None], np.atleast_2d(dense)])


@dataclass(frozen=True)
class RankStage:
    """score(texts, dense) = calibration.mu(scorer([proxy.score(texts, dense), dense])), in log1p tokens."""

    proxy: Pretrained
    scorer: LinearScorer
    calibration: Calibration
    meta: dict[str, Any]

    @property
    def dense_width(self) -> int:
        return self.proxy.dense_width

    @property
    def sigma(self) -> float:
        """Spread of log1p(length) around `score` (the censored fit's)."""
        return self.calibration.sigma

    def score(self, texts: Sequence[str], dense: np.ndarray) -> np.ndarray:
        rows = rank_rows(self.proxy.score(texts, dense), dense)
        return self.calibration.mu(self.scorer.score(rows))

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer, **self.proxy.arrays(), rank_mean=self.scorer.mean, rank_scale=self.scorer.scale,
            rank_weights=self.scorer.weights, rank_meta=np.array(json.dumps(
                {**self.meta, "calibration": self.calibration.to_json()}
            )),
        )
        atomic_write_bytes(path, buffer.getvalue())


#: What the learned predictor takes as its pretrained stage.
Stage = Pretrained | RankStage


def load_stage(path: Path) -> Stage:
    """The pretrained stage saved at `path`: a RankStage if the file holds a ranker, else the proxy model."""
    with np.load(path, allow_pickle=False) as data:
        proxy = Pretrained.from_arrays(data)
        if "rank_weights" not in data:
            return proxy
        meta = json.loads(str(data["rank_meta"]))
        scorer = LinearScorer(data["rank_mean"], data["rank_scale"], data["rank_weights"])
    return RankStage(proxy, scorer, Calibration(**meta.pop("calibration")), meta)
