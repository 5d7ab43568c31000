"""The comparison protocol on synthetic labelled prompts: every method, held-out only, curves."""

from __future__ import annotations

import numpy as np

from lengthwise.predict.offline.learned_data import Labelled
from lengthwise.predict.offline.learned_eval import Setup, compare, dense_rows
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.offline.ranker import ListMLERanker


def item(i: int, k: int) -> Labelled:
    words = "essay details history " * k if k > 5 else "hello "
    text = f"prompt {i}: {words}"
    return Labelled(f"id{i}", text, actual=min(40 * k, 512), max_tokens=512,
                    variants={"seed": {"expect": 10.0, "entropy": 1.0}}, reference_tokens=60 * k)


def test_compare_scores_every_method_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    labelled = [item(i, int(k)) for i, k in enumerate(rng.integers(1, 12, size=60))]
    pool = [item(1000 + i, int(k)) for i, k in enumerate(rng.integers(1, 12, size=200))]
    texts = [p.text for p in pool]
    dense = dense_rows(texts, None)
    lengths = np.array([p.reference_tokens for p in pool], dtype=float)
    setup = Setup(None, Pretrained.fit(texts, dense, lengths), ListMLERanker.fit(dense, lengths, lists=200), "seed")
    result = compare(setup, labelled, folds=3, repeats=1)

    metrics = result["metrics"]
    assert metrics["self-prediction (seed, expectation)"]["kendall_tau"]["mean"] == 0  # constant: no order
    assert set(result["pooled"]) == set(metrics)
    assert metrics["learned, online (after the train folds)"]["kendall_tau"]["mean"] > 0.5
    assert metrics["learned, cold (pretrained only)"]["kendall_tau"]["mean"] > 0.5
    assert all(len(v) == len(labelled) for v in result["out_of_fold"].values())
    curve = result["curves"]["learned, online (after the train folds)"]
    assert "0" in curve and "40" in curve  # held-out tau before and after observing completions
