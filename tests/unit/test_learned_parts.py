"""The learned predictor's parts: the real MiniLM embedder, the spec builder, the ListMLE ranker."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad
from scipy.stats import kendalltau

from lengthwise.predict.baselines import ConstantPredictor
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.spec import build_learned
from lengthwise.predict.offline.ranker import ListMLERanker, ScoreToLength, listmle_loss
from lengthwise.predict.registry import make_predictor


@pytest.fixture(scope="module")
def embedder() -> PromptEmbedder:
    return PromptEmbedder(max_length=64)


def test_embeddings_are_unit_vectors_that_group_similar_prompts(embedder) -> None:
    essay, story, code = embedder.embed_many(
        ["Write a long essay about the Roman empire.", "Write a long story about ancient Rome.", "def add(a, b): return a + b"]
    )
    assert essay.shape == (384,) and np.linalg.norm(essay) == pytest.approx(1.0, abs=1e-4)
    assert essay @ story > essay @ code + 0.2


def test_embeddings_are_cached_by_prompt(embedder) -> None:
    first = embedder.embed("Summarize the plot of Hamlet in two sentences.")
    assert embedder.embed("Summarize the plot of Hamlet in two sentences.") is first
    long_text = "word " * 5000  # truncated to max_length tokens, not an error
    assert embedder.embed(long_text).shape == (384,)


def test_spec_builds_the_predictor_and_refuses_bad_options() -> None:
    predictor = build_learned({"wrap": "constant:tokens=7", "pretrained": "none", "embedding": "0",
                               "retrain_every": "5"}, make_predictor)
    assert isinstance(predictor, LearnedPredictor) and isinstance(predictor.inner, ConstantPredictor)
    assert predictor.retrain_every == 5 and predictor.embedder is None
    assert build_learned({"wrap": "none", "pretrained": "default"}, make_predictor).pretrained is not None
    with pytest.raises(ValueError, match="unknown options"):
        build_learned({"colour": "red"}, make_predictor)
    with pytest.raises(ValueError, match="embedding"):
        build_learned({"wrap": "none", "embedding": "0"}, make_predictor)  # the shipped model needs the embedding


def test_listmle_gradient_is_exact() -> None:
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(50, 5))
    lists = np.stack([rng.choice(50, 8, replace=False) for _ in range(20)])
    error = check_grad(lambda w: listmle_loss(w, Z, lists, 0.1)[0], lambda w: listmle_loss(w, Z, lists, 0.1)[1],
                       rng.normal(size=5))
    assert error < 1e-5


def test_listmle_ranker_learns_an_order_and_maps_scores_to_lengths() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5))
    lengths = np.exp(X @ np.array([1.0, 0.5, 0, 0, -1.0]) + 0.3 * rng.normal(size=400) + 4)
    ranker = ListMLERanker.fit(X[:300], lengths[:300], lists=500)
    scores = ranker.score(X[300:])
    assert kendalltau(scores, lengths[300:]).statistic > 0.7
    mapped = ScoreToLength.fit(ranker.score(X[:300]), lengths[:300])(scores)
    assert kendalltau(mapped, scores).statistic > 0.99  # monotone: the order is kept
    assert lengths.min() <= mapped.min() and mapped.max() <= lengths.max()
