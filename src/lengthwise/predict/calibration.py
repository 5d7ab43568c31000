"""Online calibration: prediction features → expected actual output tokens.

Self-predictions are quantized and biased; schedulers need a predictable order and a
scale close to the truth. A calibrator keeps a window of (features, actual tokens)
from completed requests and refits every few observations, in log space:

- "huber": robust linear regression of log(1+actual) on log(1+feature) (counts) or the
  feature itself (entropy, mass, p_top), Huber loss so a few runaway answers don't
  drag the fit; several features can sharpen the order, not only the scale;
- "isotonic": a monotone map of one feature, which can fix the scale but not the order.

It is the identity until `min_samples` observations, and persists to JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.optimize import isotonic_regression, least_squares

from lengthwise.core.io import atomic_write_json
from lengthwise.predict.base import LengthRequest, Prediction, Predictor

Method = Literal["huber", "isotonic"]
#: Features used as they are (with the `cdf_*` probabilities); every other feature is
#: a count, used as log(1 + x).
LINEAR_FEATURES = frozenset({"entropy", "mass", "p_top"})
QUANTILES = (0.1, 0.5, 0.9)


def transform(name: str, value: float) -> float:
    linear = name in LINEAR_FEATURES or name.startswith("cdf_")
    return value if linear else math.log1p(max(value, 0.0))


@dataclass
class Calibrator:
    """Maps `features` of a prediction to tokens; identity (returns the raw value) when cold."""

    features: tuple[str, ...] = ("expect",)
    method: Method = "huber"
    min_samples: int = 20
    window: int = 2000
    refit_every: int = 10
    #: Huber threshold in log units (1.0 ≈ a factor e off before a point counts less).
    delta: float = 1.0
    ridge: float = 1e-2
    xs: list[list[float]] = field(default_factory=list)
    ys: list[float] = field(default_factory=list)
    model: dict[str, Any] | None = None
    pending: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("huber", "isotonic"):
            raise ValueError(f"unknown calibration method {self.method!r}; known: huber, isotonic")
        if self.method == "isotonic" and len(self.features) != 1:
            raise ValueError("isotonic calibration takes exactly one feature")
        self.features = tuple(self.features)

    def row(self, features: Mapping[str, float]) -> list[float] | None:
        """The transformed feature vector, or None if a feature is missing."""
        if not all(name in features and math.isfinite(features[name]) for name in self.features):
            return None
        return [transform(name, features[name]) for name in self.features]

    @property
    def fitted(self) -> bool:
        return self.model is not None

    def fit(self, rows: Sequence[Sequence[float]], actual: Sequence[float]) -> None:
        """Fit on transformed rows and actual tokens (replaces the model)."""
        x = np.asarray(rows, dtype=float).reshape(len(rows), len(self.features))
        y = np.log1p(np.maximum(np.asarray(actual, dtype=float), 0.0))
        if len(y) == 0:
            self.model = None
            return
        if self.method == "isotonic":
            order = np.argsort(x[:, 0], kind="stable")
            fitted = isotonic_regression(y[order]).x
            grid, inverse = np.unique(x[order, 0], return_inverse=True)
            levels = np.bincount(inverse, weights=fitted) / np.bincount(inverse)
            model: dict[str, Any] = {"grid": grid.tolist(), "levels": levels.tolist()}
            residuals = y[order] - fitted
        else:
            mean, scale = x.mean(axis=0), x.std(axis=0)
            scale[scale == 0] = 1.0
            z = (x - mean) / scale
            design = np.column_stack([np.ones(len(y)), z])
            start = np.linalg.lstsq(design, y, rcond=None)[0]

            def residual(coef: np.ndarray) -> np.ndarray:
                return np.concatenate([design @ coef - y, math.sqrt(self.ridge) * coef[1:]])

            coef = least_squares(residual, start, loss="huber", f_scale=self.delta).x
            model = {"coef": coef.tolist(), "mean": mean.tolist(), "scale": scale.tolist()}
            residuals = y - design @ coef
        model["residual_quantiles"] = {str(q): float(np.quantile(residuals, q)) for q in QUANTILES}
        model["prior"] = float(np.expm1(np.median(y)))
        self.model = model

    def _log_mean(self, row: Sequence[float]) -> float:
        assert self.model is not None
        if self.method == "isotonic":
            return float(np.interp(row[0], self.model["grid"], self.model["levels"]))
        z = (np.asarray(row) - self.model["mean"]) / np.asarray(self.model["scale"])
        return float(self.model["coef"][0] + z @ np.asarray(self.model["coef"][1:]))

    def predict(self, features: Mapping[str, float], raw: float) -> float:
        """Calibrated tokens (the median in log space), or `raw` when cold or features are missing."""
        row = self.row(features)
        if self.model is None or row is None:
            return raw
        return _clip(math.expm1(self._log_mean(row)), features)

    def quantiles(self, features: Mapping[str, float]) -> dict[float, float]:
        """Quantiles from the fit's residuals; empty when cold."""
        row = self.row(features)
        if self.model is None or row is None:
            return {}
        center = self._log_mean(row)
        residuals = self.model["residual_quantiles"].values()
        return {q: _clip(math.expm1(center + r), features) for q, r in zip(QUANTILES, residuals, strict=True)}

    def prior(self, default: float) -> float:
        """The median actual length seen so far (for fallback predictions), else `default`."""
        return self.model["prior"] if self.model is not None else default

    def update(self, features: Mapping[str, float], actual_tokens: float) -> None:
        """Record one completed request; refit every `refit_every` once warm."""
        row = self.row(features)
        if row is None:
            return
        self.xs.append(row)
        self.ys.append(float(actual_tokens))
        del self.xs[: -self.window], self.ys[: -self.window]
        self.pending += 1
        if len(self.ys) >= self.min_samples and (self.model is None or self.pending >= self.refit_every):
            self.fit(self.xs, self.ys)
            self.pending = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "method": self.method,
            "min_samples": self.min_samples,
            "window": self.window,
            "refit_every": self.refit_every,
            "delta": self.delta,
            "ridge": self.ridge,
            "xs": self.xs,
            "ys": self.ys,
            "model": self.model,
            "pending": self.pending,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        return cls(**{**data, "features": tuple(data["features"])})

    def save(self, path: str | Path) -> None:
        """Write atomically, so a crash never leaves a torn file."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path, **defaults: Any) -> Calibrator:
        """The calibrator saved at `path`, or a new one built from `defaults` if there is none."""
        path = Path(path)
        if path.exists():
            return cls.from_dict(json.loads(path.read_text()))
        return cls(**defaults)


def _clip(tokens: float, features: Mapping[str, float]) -> float:
    """Into [1, max_tokens]: no answer is shorter or longer (max_tokens when the features know it)."""
    return min(max(tokens, 1.0), features.get("max_tokens", math.inf))


class CalibratedPredictor(Predictor):
    """Wraps a predictor: applies the calibrator to its predictions and learns in `observe`."""

    def __init__(self, inner: Predictor, calibrator: Calibrator, path: str | Path | None = None, save_every: int = 10):
        self.inner = inner
        self.calibrator = calibrator
        self.path = Path(path) if path is not None else None
        self.save_every = save_every
        self.name = f"{inner.name}+cal"
        self.costly = inner.costly
        self._observed = 0

    async def predict(self, request: LengthRequest) -> Prediction:
        prediction = await self.inner.predict(request)
        raw = prediction.raw if prediction.raw is not None else prediction.tokens
        if prediction.is_fallback:
            return replace(prediction, tokens=self.calibrator.prior(prediction.tokens))
        tokens = self.calibrator.predict(prediction.features, prediction.tokens)
        quantiles = self.calibrator.quantiles(prediction.features) or prediction.quantiles
        source = prediction.source + ("+cal" if self.calibrator.fitted else "")
        return replace(prediction, tokens=tokens, raw=raw, quantiles=quantiles, source=source)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        self.inner.observe(request, prediction, actual_tokens)
        if prediction.is_fallback:
            return
        self.calibrator.update(prediction.features, actual_tokens)
        self._observed += 1
        if self.path is not None and self._observed % self.save_every == 0:
            self.save()

    def save(self) -> None:
        if self.path is not None:
            self.calibrator.save(self.path)

    async def aclose(self) -> None:
        """Save what was learned since the last `save_every`, then close the wrapped predictor."""
        self.save()
        await self.inner.aclose()
