"""LearnedPredictor: cold start, online learning, persistence, background fits, no raising."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import zlib

import numpy as np
import pytest
from scipy.stats import kendalltau

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.learned.features import Layout
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.learned.ridge import SCALES, fit_ridge

DIM = 8


class PatternEmbedder:
    """Embeds 'topic K ...' prompts so that dimension 0 carries K (the length driver), plus noise."""

    dimension = DIM

    def __init__(self) -> None:
        self.calls = 0

    def embed(self, text: str) -> np.ndarray:
        self.calls += 1
        k = int(text.split()[1])
        rng = np.random.default_rng(zlib.crc32(text.encode()))
        vector = rng.normal(scale=0.1, size=DIM)
        vector[0] = np.log(k)
        return vector

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.embed(t) for t in texts])


class ConstantSelf(Predictor):
    """A self-predictor with no signal (like the embedded model's greedy answer)."""

    name = "self"

    def __init__(self) -> None:
        self.observed: list[int] = []

    async def predict(self, request: LengthRequest) -> Prediction:
        return Prediction(tokens=10.0, source="self", raw=10.0, features={"expect": 12.0, "entropy": 1.0})

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        self.observed.append(actual_tokens)


def request(k: int, i: int, max_tokens: int = 512) -> LengthRequest:
    body = {"messages": [{"role": "user", "content": f"topic {k} question number {i}"}], "max_tokens": max_tokens}
    return LengthRequest("chat", body, request_id=f"r{k}-{i}")


def true_length(k: int, i: int) -> int:
    return int(20 * k * (1 + 0.1 * ((i * 7) % 3 - 1)))


async def feed(predictor: LearnedPredictor, n: int, offset: int = 0) -> None:
    rng = np.random.default_rng(offset)
    for i in range(offset, offset + n):
        k = int(rng.integers(1, 20))
        req = request(k, i)
        prediction = await predictor.predict(req)
        predictor.observe(req, prediction, true_length(k, i))
    predictor.wait_idle(timeout=30)


async def held_out_tau(predictor: LearnedPredictor) -> float:
    ks = [k for k in range(1, 20) for _ in range(3)]
    predictions = [await predictor.predict(request(k, 10_000 + j)) for j, k in enumerate(ks)]
    return kendalltau([p.tokens for p in predictions], [true_length(k, 10_000 + j) for j, k in enumerate(ks)])[0]


def make(**kwargs) -> LearnedPredictor:
    kwargs.setdefault("min_observations", 20)
    return LearnedPredictor(ConstantSelf(), embedder=PatternEmbedder(), **kwargs)


async def test_cold_start_returns_the_wrapped_prediction() -> None:
    predictor = make()
    inner = await predictor.inner.predict(request(3, 0))
    assert await predictor.predict(request(3, 0)) == inner


async def test_online_learning_ranks_a_pattern_the_wrapped_predictor_misses() -> None:
    predictor = make(retrain_every=10)
    before = await held_out_tau(predictor)
    await feed(predictor, 120)
    after = await held_out_tau(predictor)
    assert np.isnan(before) or before < 0.1  # constant predictions carry no order
    assert after > 0.8
    prediction = await predictor.predict(request(5, 1))
    assert prediction.source == "learned:online"
    assert prediction.quantiles[0.1] < prediction.quantiles[0.5] < prediction.quantiles[0.9]
    status = predictor.status()
    assert status["stage"] == "online" and status["observed"] == 120 and status["window"] == 120
    assert status["fits"] >= 1 and status["pending"] == 0 and status["loo_rmse_log"] < 0.3
    assert predictor.inner.observed[:3] == [true_length(k, i) for k, i in _first_ks(3)]


def _first_ks(n: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(0)
    return [(int(rng.integers(1, 20)), i) for i in range(n)]


async def test_prediction_is_clipped_to_max_tokens() -> None:
    predictor = make()
    await feed(predictor, 60)
    assert (await predictor.predict(request(19, 5, max_tokens=50))).tokens <= 50


async def test_state_round_trips_through_disk(tmp_path) -> None:
    path = tmp_path / "learned.npz"
    first = make(state_path=path)
    await feed(first, 60)
    probe = request(7, 555)
    expected = (await first.predict(probe)).tokens
    first.close()

    second = make(state_path=path)
    assert second.observed == 60
    assert (await second.predict(probe)).tokens == pytest.approx(expected)
    await feed(second, 10, offset=60)  # learning resumes on the restored window
    assert second.fits > first.fits


async def test_state_saved_with_other_features_is_refused(tmp_path) -> None:
    path = tmp_path / "learned.npz"
    first = make(state_path=path)
    await feed(first, 30)
    with pytest.raises(ValueError, match="other features"):
        LearnedPredictor(None, embedder=PatternEmbedder(), state_path=path)


async def test_a_slow_fit_does_not_block_predict() -> None:
    started, release = threading.Event(), threading.Event()

    def slow_fit(X, y, penalties):
        started.set()
        release.wait(timeout=30)
        return fit_ridge(X, y, penalties)

    predictor = make(fit=slow_fit, min_observations=5, retrain_every=5)
    for i in range(5):
        predictor.observe(request(2, i), Prediction(10.0, "self"), 40)
    assert await asyncio.to_thread(started.wait, 10)
    t0 = time.perf_counter()
    prediction = await asyncio.wait_for(predictor.predict(request(4, 99)), timeout=10)
    elapsed = time.perf_counter() - t0
    assert not release.is_set() and elapsed < 5  # answered while the fit was still running
    assert prediction.source == "self"  # no model yet: still the wrapped prediction
    release.set()
    predictor.wait_idle(timeout=30)
    assert (await predictor.predict(request(4, 99))).source == "learned:online"


class Raises(Predictor):
    name = "broken"
    dimension = DIM

    async def predict(self, request: LengthRequest) -> Prediction:
        raise RuntimeError("boom")

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        raise RuntimeError("boom")

    def embed_many(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("no model")


@pytest.mark.parametrize(
    "body",
    [{"messages": []}, {"messages": [{"role": "user", "content": ""}]}, {"prompt": 3}, {}],
)
async def test_bad_requests_fall_back_without_raising(body) -> None:
    predictor = LearnedPredictor(None, embedder=PatternEmbedder())
    prediction = await predictor.predict(LengthRequest("chat", body))
    assert prediction.is_fallback
    predictor.observe(LengthRequest("chat", body), prediction, 10)  # ignored, no raise


async def test_failing_parts_fall_back_without_raising() -> None:
    predictor = LearnedPredictor(Raises(), embedder=Raises(), min_observations=1, retrain_every=1)
    prediction = await predictor.predict(request(1, 0))
    assert prediction.is_fallback and "boom" in prediction.fallback_reason
    predictor.observe(request(1, 0), prediction, 10)
    predictor.wait_idle(timeout=30)  # the embedder fails in the background fit too: logged, no raise
    assert (await predictor.predict(request(1, 1))).is_fallback


def pretrained_on_pattern(embedder: PatternEmbedder) -> Pretrained:
    """A proxy model fit on 'answers' 1.5x longer than the true ones, with an unrelated word per length."""
    layout = Layout(use_self=False, embedding_dim=DIM)
    ks = np.random.default_rng(1).integers(1, 20, size=300)
    texts = [f"topic {k} q {i} {'essay' if k > 10 else 'hello'}" for i, k in enumerate(ks)]
    dense = np.stack([layout.vector(5, np.zeros(0), embedder.embed(t)) for t in texts])
    return Pretrained.fit(texts, dense, 30.0 * ks, meta={"label": "synthetic"})


def test_pretrained_round_trips_through_disk(tmp_path) -> None:
    embedder = PatternEmbedder()
    model = pretrained_on_pattern(embedder)
    model.save(tmp_path / "pre.npz")
    loaded = Pretrained.load(tmp_path / "pre.npz")
    texts = ["topic 3 essay please", "topic 17 hello there", "topic 5 unseen words only"]
    dense = np.stack([np.concatenate([[2.0], embedder.embed(t)]) for t in texts])
    assert np.allclose(loaded.score(texts, dense), model.score(texts, dense))
    assert loaded.meta == model.meta


async def test_pretrained_stage_predicts_before_any_observation(tmp_path) -> None:
    embedder = PatternEmbedder()
    predictor = LearnedPredictor(ConstantSelf(), embedder=embedder, pretrained=pretrained_on_pattern(embedder),
                                 full_after=40)
    assert (await predictor.predict(request(3, 0))).source == "learned:pretrained"
    cold = await held_out_tau(predictor)
    assert cold > 0.6  # the proxy's order carries over before any completion
    await feed(predictor, 40)  # the online stage stacks on the pretrained score
    assert (await predictor.predict(request(3, 0))).source == "learned:online"
    assert await held_out_tau(predictor) > max(cold, 0.8)


async def test_before_full_after_completions_the_online_stage_keeps_the_pretrained_order() -> None:
    embedder = PatternEmbedder()
    predictor = LearnedPredictor(ConstantSelf(), embedder=embedder, pretrained=pretrained_on_pattern(embedder))
    cold = [(await predictor.predict(request(k, 10_000 + k))).tokens for k in range(1, 20)]
    await feed(predictor, 40)  # past min_observations (30), short of full_after (100)
    online = [await predictor.predict(request(k, 10_000 + k)) for k in range(1, 20)]
    assert all(p.source == "learned:online" for p in online)
    assert kendalltau(cold, [p.tokens for p in online]).statistic == pytest.approx(1.0)  # rescaled only


def test_loo_selection_matches_brute_force_leave_one_out() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 5))
    y = X @ rng.normal(size=5) + rng.normal(size=40)
    model = fit_ridge(X, y, 3.0)
    # Refit without each row on the same standardized columns, intercept unpenalized.
    A = np.column_stack([np.ones(40), (X - model.mean) / model.scale])
    penalty = np.diag([0.0] + [3.0] * 5)
    residuals = []
    for i in range(40):
        keep = np.arange(40) != i
        coef = np.linalg.solve(A[keep].T @ A[keep] + penalty, A[keep].T @ y[keep])
        residuals.append(y[i] - A[i] @ coef)
    assert model.loo_rmse == pytest.approx(float(np.sqrt(np.mean(np.square(residuals)))), rel=1e-6)
    chosen = fit_ridge(X, y, 1.0, SCALES)
    assert chosen.loo_rmse <= fit_ridge(X, y, 3.0).loo_rmse + 1e-12  # 3.0 is among the candidates


def test_expected_capped_keeps_the_order_above_the_cap() -> None:
    from lengthwise.predict.learned.distribution import expected_capped

    cap = 64.0
    values = [expected_capped(math.log1p(t), 1.0, cap) for t in (10, 64, 200, 1000, 5000)]
    assert all(a < b for a, b in zip(values, values[1:]))  # strictly rising, no ties at the cap
    assert all(0 < v < cap for v in values)
    assert expected_capped(math.log1p(20), 1e-6, cap) == pytest.approx(20, rel=1e-3)  # no spread: the point
    assert expected_capped(math.log1p(500), 1e-6, cap) == pytest.approx(cap, rel=1e-3)
    # Monte Carlo check of the closed form.
    rng = np.random.default_rng(0)
    draws = np.expm1(rng.normal(math.log1p(80), 0.7, 200_000))
    assert expected_capped(math.log1p(80), 0.7, cap) == pytest.approx(np.minimum(draws, cap).mean(), rel=0.01)


async def test_prompts_predicted_just_above_the_cap_still_rank() -> None:
    predictor = make()
    await feed(predictor, 60)  # topic k asks for about 20k tokens
    tokens = [(await predictor.predict(request(k, 900 + k, max_tokens=100))).tokens for k in (4, 5, 6, 7)]
    assert tokens[0] < tokens[1] < tokens[2] < tokens[3] < 100  # clipping would tie the last three at 100


def test_the_prior_is_the_held_out_measurement_shipped_with_the_stage() -> None:
    embedder = PatternEmbedder()
    stage = pretrained_on_pattern(embedder)
    assert LearnedPredictor(embedder=embedder, pretrained=stage).prior() is None  # nothing measured
    stage.meta["held_out"] = {"n": 153, "tau": 0.39, "low": 0.29, "high": 0.5, "split": "test"}
    prior = LearnedPredictor(embedder=embedder, pretrained=stage).prior()
    assert prior is not None and (prior.n, prior.tau, prior.low, prior.high) == (153, 0.39, 0.29, 0.5)
    assert prior.significant
    assert LearnedPredictor(embedder=embedder).prior() is None  # no pretrained stage
