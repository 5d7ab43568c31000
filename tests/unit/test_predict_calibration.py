"""Calibration: identity when cold, better after fitting, persisted, learned online."""

import math

import numpy as np
import pytest

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.calibration import CalibratedPredictor, Calibrator


def biased_data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw predictions that are 4x too small and noisy: actual ≈ 4·raw^0.9."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(3.5, 1.0, n)
    actual = np.exp(math.log(4) + 0.9 * np.log(raw) + rng.normal(0, 0.3, n))
    return raw, actual


@pytest.mark.parametrize("method", ["huber", "isotonic"])
def test_identity_when_cold_then_closer_to_the_truth(method: str) -> None:
    raw, actual = biased_data()
    calibrator = Calibrator(method=method, min_samples=20)
    assert calibrator.predict({"expect": 50.0}, 50.0) == 50.0
    for r, a in zip(raw[:19], actual[:19], strict=True):
        calibrator.update({"expect": r}, a)
    assert not calibrator.fitted and calibrator.predict({"expect": 50.0}, 50.0) == 50.0
    for r, a in zip(raw[19:200], actual[19:200], strict=True):
        calibrator.update({"expect": r}, a)
    assert calibrator.fitted
    test_raw, test_actual = raw[200:], actual[200:]
    calibrated = np.array([calibrator.predict({"expect": r}, r) for r in test_raw])
    raw_error = np.median(np.abs(np.log(test_raw / test_actual)))
    calibrated_error = np.median(np.abs(np.log(calibrated / test_actual)))
    assert calibrated_error < raw_error / 3
    q = calibrator.quantiles({"expect": 50.0})
    assert q[0.1] < q[0.5] < q[0.9]


def test_huber_ignores_a_few_runaway_answers() -> None:
    raw, actual = biased_data(200)
    actual[:10] = 1.0  # ten answers that stopped at once
    calibrator = Calibrator()
    calibrator.fit([calibrator.row({"expect": r}) for r in raw], actual)
    assert calibrator.predict({"expect": 50.0}, 50.0) == pytest.approx(4 * 50**0.9, rel=0.15)


def test_several_features_and_missing_ones() -> None:
    rng = np.random.default_rng(1)
    prompt = rng.lognormal(4, 1, 200)
    actual = 3 * prompt
    calibrator = Calibrator(features=("expect", "prompt_tokens"))
    calibrator.fit([calibrator.row({"expect": 10.0, "prompt_tokens": p}) for p in prompt], actual)
    assert calibrator.predict({"expect": 10.0, "prompt_tokens": 100.0}, 1.0) == pytest.approx(300, rel=0.05)
    assert calibrator.predict({"expect": 10.0}, 7.0) == 7.0  # a feature is missing: raw
    capped = calibrator.predict({"expect": 10.0, "prompt_tokens": 1000.0, "max_tokens": 512.0}, 1.0)
    assert capped == 512.0


def test_isotonic_needs_one_feature_and_methods_are_checked() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Calibrator(features=("a", "b"), method="isotonic")
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibrator(method="magic")  # type: ignore[arg-type]


def test_persistence_round_trip(tmp_path) -> None:
    raw, actual = biased_data(100)
    calibrator = Calibrator(features=("expect",), window=80, refit_every=5)
    for r, a in zip(raw, actual, strict=True):
        calibrator.update({"expect": r}, a)
    assert len(calibrator.ys) == 80
    path = tmp_path / "cal" / "self.json"
    calibrator.save(path)
    loaded = Calibrator.load(path)
    assert loaded.to_dict() == calibrator.to_dict()
    assert loaded.predict({"expect": 42.0}, 42.0) == calibrator.predict({"expect": 42.0}, 42.0)
    fresh = Calibrator.load(tmp_path / "missing.json", method="isotonic")
    assert fresh.method == "isotonic" and not fresh.fitted


class Fixed(Predictor):
    """A predictor whose raw predictions are a quarter of the truth it is told to expect."""

    name = "fixed"

    def __init__(self) -> None:
        self.value = 10.0
        self.fail = False

    async def predict(self, request: LengthRequest) -> Prediction:
        if self.fail:
            return Prediction(256.0, self.name, fallback_reason="down")
        return Prediction(self.value, self.name, raw=self.value, features={"expect": self.value})

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        pass


async def test_calibrated_predictor_learns_in_observe_and_saves(tmp_path) -> None:
    inner = Fixed()
    path = tmp_path / "cal.json"
    wrapped = CalibratedPredictor(inner, Calibrator(min_samples=10, refit_every=1), path, save_every=5)
    request = LengthRequest("chat", {"messages": [{"role": "user", "content": "q"}]})
    first = await wrapped.predict(request)
    assert first.tokens == 10.0 and first.source == "fixed"
    for value in range(5, 60):
        inner.value = float(value)
        prediction = await wrapped.predict(request)
        wrapped.observe(request, prediction, 4 * value)
    inner.value = 30.0
    learned = await wrapped.predict(request)
    assert learned.tokens == pytest.approx(120, rel=0.05)
    assert learned.raw == 30.0 and learned.source == "fixed+cal"
    assert path.exists() and Calibrator.load(path).fitted
    inner.fail = True
    fallback = await wrapped.predict(request)
    assert fallback.is_fallback and fallback.tokens == pytest.approx(wrapped.calibrator.prior(0.0))
    wrapped.observe(request, fallback, 1000)  # fallbacks teach nothing
    assert len(wrapped.calibrator.ys) == 55
