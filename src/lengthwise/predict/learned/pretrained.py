"""The learned predictor's offline stage: which prompts ask for long answers, from proxy labels.

Trained on ShareGPT dev records with the token count of the recorded answer
(ChatGPT's) as the label, clipped to `clip` tokens and in log space: another model's
lengths, but the same prompts' demands ("write an essay" vs "hi"). One ridge
(scikit-learn) over TF-IDF word uni- and bigrams of the prompt plus the dense
features (log prompt tokens and, when an embedder is used, the MiniLM embedding).
On a held-out part of the dev pool TF-IDF ranked the proxy lengths better than the
embedding (see docs/LEARNED.md), so both are kept.

Saved as one .npz (vocabulary, idf, coefficients, metadata): no pickle.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.core.io import atomic_write_bytes

#: The model `lengthwise predict learned train` ships (dev records 2,000-9,999, MiniLM embedding).
SHIPPED = Path(__file__).with_name("pretrained.npz")
#: Weight of the standardized dense block against the TF-IDF block in the joint ridge.
DENSE_WEIGHT = 0.05
NGRAMS = (1, 2)


def _vectorizer(vocabulary: dict[str, int] | None = None, max_features: int | None = None, min_df: int = 3):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        ngram_range=NGRAMS, sublinear_tf=True, min_df=min_df, max_features=max_features,
        vocabulary=vocabulary, dtype=np.float64,
    )


@dataclass
class Pretrained:
    """score(text, dense) = tfidf(text) · text_coef + ((dense - mean) / scale) · dense_coef + bias."""

    vectorizer: Any
    text_coef: np.ndarray
    dense_mean: np.ndarray
    dense_scale: np.ndarray
    dense_coef: np.ndarray
    bias: float
    meta: dict[str, Any]

    @property
    def dense_width(self) -> int:
        return len(self.dense_coef)

    def score(self, texts: Sequence[str], dense: np.ndarray) -> np.ndarray:
        """Predicted log1p(proxy length) per text; `dense` has one row per text."""
        sparse = self.vectorizer.transform(list(texts))
        dense = (np.atleast_2d(dense) - self.dense_mean) / self.dense_scale
        return sparse @ self.text_coef + dense @ self.dense_coef + self.bias

    @classmethod
    def fit(
        cls, texts: Sequence[str], dense: np.ndarray, lengths: np.ndarray, *, clip: int = 512,
        alpha: float = 3.0, max_features: int = 30_000, meta: dict[str, Any] | None = None,
    ) -> Pretrained:
        from scipy import sparse as sp
        from sklearn.linear_model import Ridge

        vectorizer = _vectorizer(max_features=max_features)
        text = vectorizer.fit_transform(list(texts))
        mean = dense.mean(axis=0)
        scale = dense.std(axis=0)
        scale[scale < 1e-9] = 1.0
        joint = sp.hstack([text, sp.csr_matrix((dense - mean) / scale * DENSE_WEIGHT)]).tocsr()
        y = np.log1p(np.minimum(np.asarray(lengths, dtype=np.float64), clip))
        ridge = Ridge(alpha=alpha).fit(joint, y)
        vocab = text.shape[1]
        fingerprint = hashlib.blake2b(ridge.coef_.tobytes(), digest_size=8).hexdigest()
        info = {"n": len(y), "clip": clip, "alpha": alpha, "vocabulary": vocab, "fingerprint": fingerprint, **(meta or {})}
        return cls(
            vectorizer, ridge.coef_[:vocab], mean, scale, ridge.coef_[vocab:] * DENSE_WEIGHT,
            float(ridge.intercept_), info,
        )

    @property
    def sigma(self) -> None:
        """No spread: the score is a proxy's log length, not calibrated to the serving model's."""
        return None

    def arrays(self) -> dict[str, np.ndarray]:
        """The model as named arrays (for an .npz: no pickle)."""
        terms = sorted(self.vectorizer.vocabulary_, key=self.vectorizer.vocabulary_.get)
        return {
            "terms": np.array(terms), "idf": self.vectorizer.idf_, "text_coef": self.text_coef,
            "dense_mean": self.dense_mean, "dense_scale": self.dense_scale, "dense_coef": self.dense_coef,
            "bias": np.array(self.bias), "meta": np.array(json.dumps(self.meta)),
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray]) -> Pretrained:
        vectorizer = _vectorizer({str(t): i for i, t in enumerate(data["terms"])}, min_df=1)
        vectorizer.idf_ = data["idf"]
        return cls(
            vectorizer, data["text_coef"], data["dense_mean"], data["dense_scale"], data["dense_coef"],
            float(data["bias"]), json.loads(str(data["meta"])),
        )

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **self.arrays())
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> Pretrained:
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(data)
