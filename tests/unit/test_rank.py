"""The ranker on the serving model's labels: split, censored pairwise loss, distribution, stage, protocol."""

from __future__ import annotations

import math
import zlib
from collections import Counter

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.stats import kendalltau

from lengthwise.core.stats import kendall_tau, kendall_tau_difference_ci
from lengthwise.predict.base import LengthRequest
from lengthwise.predict.learned.distribution import Calibration, capped_quantiles, expected_capped
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.learned.rank_stage import LinearScorer, RankStage, load_stage
from lengthwise.predict.offline.label_split import bucket, split_of
from lengthwise.predict.offline.learned_data import Labelled
from lengthwise.predict.offline.learned_eval import dense_rows
from lengthwise.predict.offline.rank_eval import (
    RANK_ONLINE, RANK_STAGE, SHIPPED_COLD, SHIPPED_ONLINE, SHIPPED_ONLINE_VAL, build_data, evaluate, label_curve,
    markdown, online_curve,
)
from lengthwise.predict.offline.ranker import PairwiseRanker, known_pairs, pairwise_loss

DIM = 6
CAP = 256


class TopicEmbedder:
    """Embeds 'topic K ...' prompts with log K in dimension 0 (the length driver), plus noise."""

    dimension = DIM

    def embed(self, text: str) -> np.ndarray:
        vector = np.random.default_rng(zlib.crc32(text.encode())).normal(scale=0.1, size=DIM)
        vector[0] = math.log(int(text.split()[1]))
        return vector

    def embed_many(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.embed(text) for text in texts])


def test_the_split_is_a_fixed_function_of_the_id_in_70_15_15() -> None:
    ids = [f"prompt_{i}" for i in range(20_000)]
    parts = Counter(split_of(i) for i in ids)
    assert abs(parts["train"] / 20_000 - 0.70) < 0.01 and abs(parts["test"] / 20_000 - 0.15) < 0.01
    assert bucket("uib2Fwz_0") == bucket("uib2Fwz_0") == 5  # sha256, not Python's salted hash
    assert split_of("uib2Fwz_0") == "train"


def test_known_pairs_follow_the_censoring() -> None:
    lengths = np.array([10, 50, 256, 256, 50])
    capped = np.array([False, False, True, True, False])
    pairs = set(zip(*(p.tolist() for p in known_pairs(lengths, capped)), strict=True))
    # 10 < everything; 50 < both capped; capped ones tie with each other and order nothing; equal 50s tie.
    assert pairs == {(0, 1), (0, 2), (0, 3), (0, 4), (1, 2), (1, 3), (4, 2), (4, 3)}


def test_pairwise_gradient_is_exact() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(40, 5))
    shorter, longer = known_pairs(rng.integers(1, 300, 40).astype(float), rng.random(40) < 0.3)
    penalty = np.full(5, 0.1)
    error = check_grad(lambda w: pairwise_loss(w, Z, shorter, longer, penalty)[0],
                       lambda w: pairwise_loss(w, Z, shorter, longer, penalty)[1], rng.normal(size=5))
    assert error < 1e-5


def censored_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    true = np.expm1(X @ np.array([1.0, 0.5, 0.0, -0.5]) + 4.5 + 0.5 * rng.normal(size=n))
    return X, true, np.minimum(true, CAP), true >= CAP


def test_pairwise_ranker_learns_the_order_from_censored_labels() -> None:
    X, true, observed, capped = censored_sample(600, 1)
    assert 0.2 < capped.mean() < 0.6
    ranker = PairwiseRanker.fit(X[:400], observed[:400], capped[:400], l2=1e-3)
    assert kendalltau(ranker.score(X[400:]), true[400:]).statistic > 0.6  # the order beyond the cap too


def test_censored_calibration_recovers_the_log_normal() -> None:
    rng = np.random.default_rng(2)
    scores = rng.normal(size=4000)
    true = np.expm1(4.0 + 0.8 * scores + 0.6 * rng.normal(size=4000))
    calibration = Calibration.fit(scores, np.minimum(true, CAP), true >= CAP)
    assert calibration.a == pytest.approx(4.0, abs=0.05) and calibration.b == pytest.approx(0.8, abs=0.05)
    assert calibration.sigma == pytest.approx(0.6, abs=0.03)  # ignoring the censoring would shrink it


def test_capped_quantiles_are_those_of_the_served_length() -> None:
    q = capped_quantiles(math.log1p(200), 1.0, CAP, (0.05, 0.5, 0.95))
    assert q[0.05] < q[0.5] < q[0.95] == CAP and q[0.5] == pytest.approx(200)
    assert capped_quantiles(math.log1p(0.1), 0.1, CAP, (0.5,))[0.5] == 1.0  # at least one token
    draws = np.minimum(np.expm1(np.random.default_rng(3).normal(math.log1p(200), 1.0, 100_000)), CAP)
    assert expected_capped(math.log1p(200), 1.0, CAP) == pytest.approx(draws.mean(), rel=0.01)


def test_tau_difference_is_paired() -> None:
    rng = np.random.default_rng(4)
    actual = rng.normal(size=80)
    good, noisy = actual + 0.5 * rng.normal(size=80), actual + 2.0 * rng.normal(size=80)
    diff = kendall_tau_difference_ci(good, noisy, actual)
    assert diff.tau == pytest.approx(kendall_tau(good, actual) - kendall_tau(noisy, actual))
    assert diff.low < diff.tau < diff.high
    same = kendall_tau_difference_ci(good, good, actual)
    assert same.tau == 0 and same.low == same.high == 0


def test_tau_difference_against_two_truths() -> None:
    """Two models' self-predictions, each against its own lengths, on the same prompts."""
    rng = np.random.default_rng(5)
    actual_a, actual_b = rng.normal(size=80), rng.normal(size=80)
    pred_a, pred_b = actual_a + 0.5 * rng.normal(size=80), actual_b + 2.0 * rng.normal(size=80)
    diff = kendall_tau_difference_ci(pred_a, pred_b, actual_a, second_actual=actual_b)
    assert diff.tau == pytest.approx(kendall_tau(pred_a, actual_a) - kendall_tau(pred_b, actual_b))
    assert diff.low < diff.tau < diff.high


def topic_prompts(n: int, seed: int, prefix: str) -> list[Labelled]:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        k = int(rng.integers(1, 20))
        true = int(np.expm1(math.log(14 * k) + 0.3 * rng.normal()))
        words = "essay details " * 3 if k > 10 else "hello"
        items.append(Labelled(f"{prefix}{i}", f"topic {k} question {i} {words}", min(true, CAP), CAP,
                              reference_tokens=20 * k, capped=true >= CAP, index=i))
    return items


def proxy_on(items: list[Labelled], embedder: TopicEmbedder) -> Pretrained:
    texts = [item.text for item in items]
    dense = dense_rows(texts, np.stack([embedder.embed(t) for t in texts]))
    return Pretrained.fit(texts, dense, [item.reference_tokens for item in items], meta={"fingerprint": "synthetic"})


def test_the_protocol_grades_every_predictor_on_the_test_split_only(tmp_path) -> None:
    embedder = TopicEmbedder()
    proxy = proxy_on(topic_prompts(300, 0, "pool"), embedder)
    items = topic_prompts(400, 1, "label")
    data = build_data(items, np.stack([embedder.embed(item.text) for item in items]), proxy)
    result, stage = evaluate(data, embedder, proxy, proxy)

    assert sum(result["n"].values()) == 400 and result["n"]["test"] == sum(split_of(i.id) == "test" for i in items)
    rows = result["rows"]
    assert {RANK_STAGE, RANK_ONLINE, SHIPPED_COLD, SHIPPED_ONLINE, SHIPPED_ONLINE_VAL} <= set(rows)
    assert all(row["n"] == result["n"]["test"] for row in rows.values())
    assert rows[RANK_STAGE]["tau"] > 0.6 and rows[SHIPPED_ONLINE]["tau"] > 0.6
    assert 0.5 <= rows[RANK_STAGE]["nominal90"] and 0.6 < rows[RANK_STAGE]["cover90"]
    assert "cover50" not in rows[SHIPPED_COLD]  # a proxy score has no spread of its own
    curve = online_curve(data, embedder, proxy, 0.1, repeats=1, held_out=60, ranker_prompts=100)
    assert set(curve["rank stage"]) == {"0", "30", "60", "100"} and curve["rank stage"]["0"] > 0.6
    result["online_curve"] = curve
    result["label_curve"] = label_curve(data, 0.1, repeats=2, held_out=60)
    assert list(result["label_curve"])[:3] == ["0 (proxy score)", "50", "100"]
    assert result["label_curve"][str(len(data.where("train", "val")) - 60)] > 0.6
    assert "| " + RANK_STAGE in markdown(result) and "| rank stage | " in markdown(result)
    assert "| held-out τ-b | " in markdown(result)

    stage.save(tmp_path / "stage.npz")
    loaded = load_stage(tmp_path / "stage.npz")
    assert isinstance(loaded, RankStage) and loaded.meta == stage.meta and loaded.calibration == stage.calibration
    assert stage.label is not None and loaded.label is not None  # the label ridge travels in the same file
    texts = [item.text for item in items[:5]]
    dense = dense_rows(texts, np.stack([embedder.embed(t) for t in texts]))
    assert np.allclose(loaded.score(texts, dense), stage.score(texts, dense))
    proxy.save(tmp_path / "proxy.npz")
    assert isinstance(load_stage(tmp_path / "proxy.npz"), Pretrained)


async def test_a_rank_stage_gives_the_learned_predictor_a_distribution_before_any_completion() -> None:
    embedder = TopicEmbedder()
    proxy = proxy_on(topic_prompts(200, 5, "pool"), embedder)
    stage = RankStage(proxy, LinearScorer(np.zeros(DIM + 2), np.ones(DIM + 2), np.eye(DIM + 2)[0]),
                      Calibration(0.0, 1.0, 0.7), {"fingerprint": "test"})
    predictor = LearnedPredictor(None, embedder=embedder, pretrained=stage)
    body = {"messages": [{"role": "user", "content": "topic 12 question 1 essay"}], "max_tokens": 64}
    prediction = await predictor.predict(LengthRequest("chat", body, request_id="a"))
    predictor.close()
    assert prediction.source == "learned:pretrained" and prediction.features["learned_sigma"] == 0.7
    assert prediction.quantiles[0.05] < prediction.quantiles[0.5] <= prediction.quantiles[0.95] <= 64
    assert prediction.tokens == pytest.approx(expected_capped(prediction.features["learned_log"], 0.7, 64))
