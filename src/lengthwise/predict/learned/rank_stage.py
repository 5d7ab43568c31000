"""The learned predictor's pretrained stage trained on the serving model's own lengths.

`Pretrained` learns which prompts ask for long answers from another model's answers
(ShareGPT's recorded ones); its score is on that model's scale. `RankStage` stacks a
ranker trained on the embedded model's labelled lengths (`lengthwise predict learned
rank`) on top: a linear scorer over [proxy score, label-ridge score, log prompt tokens,
MiniLM embedding] fit with a censored pairwise loss, then a censored log-normal
calibration (`distribution.Calibration`), so its `score` is this model's expected log
length and `sigma` its spread. The label-ridge score is a second `Pretrained` (TF-IDF +
dense) fit on the serving model's own labelled lengths rather than ChatGPT's: its
TF-IDF weights say which words ask this model for long answers, which the proxy's fixed
weights cannot (stacking it lifted the ranker's validation tau; docs/LEARNED.md). Both
stages answer `score(texts, dense)` alike, so the predictor takes either. Saved as one
.npz holding the proxy model and the label ridge too: no pickle.
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


#: Key prefix of the label ridge's arrays in a saved stage (the proxy's have none).
LABEL_PREFIX = "label_"


def rank_rows(proxy_scores: np.ndarray, dense: np.ndarray, label_scores: np.ndarray | None = None) -> np.ndarray:
    """The ranker's input rows: [proxy score, label-ridge score if any, dense row (log prompt tokens, embedding)]."""
    scores = [proxy_scores] if label_scores is None else [proxy_scores, label_scores]
    return np.hstack([np.asarray(s, dtype=np.float64)[:, None] for s in scores] + [np.atleast_2d(dense)])


@dataclass(frozen=True)
class RankStage:
    """score(texts, dense) = calibration.mu(scorer([proxy.score, label.score, dense])), in log1p tokens."""

    proxy: Pretrained
    scorer: LinearScorer
    calibration: Calibration
    meta: dict[str, Any]
    #: The ridge on the serving model's labels whose score is the scorer's second column (None: no such column).
    label: Pretrained | None = None

    @property
    def dense_width(self) -> int:
        return self.proxy.dense_width

    @property
    def sigma(self) -> float:
        """Spread of log1p(length) around `score` (the censored fit's)."""
        return self.calibration.sigma

    def score(self, texts: Sequence[str], dense: np.ndarray) -> np.ndarray:
        label = None if self.label is None else self.label.score(texts, dense)
        return self.calibration.mu(self.scorer.score(rank_rows(self.proxy.score(texts, dense), dense, label)))

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        label = {} if self.label is None else {LABEL_PREFIX + k: v for k, v in self.label.arrays().items()}
        np.savez_compressed(
            buffer, **self.proxy.arrays(), **label, rank_mean=self.scorer.mean, rank_scale=self.scorer.scale,
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
        labelled = {k.removeprefix(LABEL_PREFIX): data[k] for k in data.files if k.startswith(LABEL_PREFIX)}
        label = Pretrained.from_arrays(labelled) if labelled else None
    return RankStage(proxy, scorer, Calibration(**meta.pop("calibration")), meta, label)
