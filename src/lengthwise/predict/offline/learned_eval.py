"""Compare the learned predictor with self-prediction and the learning-to-rank baseline.

Protocol (no prompt is both trained on and tested): the labelled prompts (the
embedded model's actual lengths) are split in K folds, repeated with different
shuffles; the proxy pool used for pretraining holds no labelled prompt text. For
each fold the online learner starts from the pretrained model, is streamed the
other folds' completions through `predict` and `observe` exactly as the gateway
would, and then predicts the held-out fold. Metrics are computed per held-out fold
and averaged (each fold's model is one predictor, as a gateway would run it), and
also on the out-of-fold predictions pooled per repeat (which mixes folds' models, so
a method that refits per fold loses a little there). The learning curve is the
held-out tau after n observed completions, averaged over folds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.learned.features import self_vector
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.offline.learned_data import Labelled
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.offline.ranker import ListMLERanker, ScoreToLength
from lengthwise.predict.offline.report import FALLBACK_TOKENS, accuracy
from lengthwise.core.tokens import count_tokens

CHECKPOINTS = (0, 10, 20, 40, 80, 160, 320, 640)
COLD = "learned, cold (pretrained only)"


class ReplaySelf(Predictor):
    """The self-predictor as recorded by `predict eval`, replayed by prompt text."""

    def __init__(self, labelled: Sequence[Labelled], variant: str) -> None:
        self.name = f"self:{variant}"
        self._by_text = {item.text: item.variants.get(variant) for item in labelled}

    async def predict(self, request: LengthRequest) -> Prediction:
        features = self._by_text.get(request.body["messages"][-1]["content"])
        if not features:
            return Prediction(FALLBACK_TOKENS, self.name, fallback_reason="no recorded self-prediction")
        return Prediction(features["expect"], self.name, raw=features["expect"], features=dict(features))

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Replayed: nothing to learn."""


def as_request(item: Labelled) -> LengthRequest:
    body = {"messages": [{"role": "user", "content": item.text}], "max_tokens": item.max_tokens}
    return LengthRequest("chat", body, request_id=item.id)


@dataclass
class Setup:
    """What every fold shares: pretrained models and the embedder (None: no embedding)."""

    embedder: Any
    pretrained: Pretrained
    ranker: ListMLERanker
    variant: str | None
    ablations: Mapping[str, tuple[Any, Pretrained]] = field(default_factory=dict)


def dense_rows(texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
    """[log prompt tokens, embedding] rows, the pretrained stage's dense input."""
    lengths = np.log1p([count_tokens(t) for t in texts])[:, None]
    return lengths if embeddings is None else np.hstack([lengths, embeddings])


def ranker_rows(setup: Setup, items: Sequence[Labelled], with_self: bool) -> np.ndarray:
    embeddings = np.stack([setup.embedder.embed(i.text) for i in items]) if setup.embedder else None
    dense = dense_rows([i.text for i in items], embeddings)
    if not with_self or setup.variant is None:
        return dense
    blocks = [self_vector(_recorded(i, setup.variant)) for i in items]
    return np.hstack([dense[:, :1], np.stack(blocks), dense[:, 1:]])


def _recorded(item: Labelled, variant: str) -> Prediction | None:
    features = item.variants.get(variant)
    return None if not features else Prediction(features["expect"], "self", raw=features["expect"], features=dict(features))


async def _online(
    setup: Setup, embedder: Any, pretrained: Pretrained, train: Sequence[Labelled], test: Sequence[Labelled],
    replay: ReplaySelf | None, curve: dict[int, list[float]] | None,
) -> np.ndarray:
    predictor = LearnedPredictor(replay, embedder=embedder, pretrained=pretrained)
    actual = np.array([t.actual for t in test], dtype=float)

    async def held_out() -> np.ndarray:
        return np.array([(await predictor.predict(as_request(t))).tokens for t in test])

    try:
        for n, item in enumerate(train):
            if curve is not None and n in CHECKPOINTS:
                predictor.wait_idle()
                curve.setdefault(n, []).append(_tau(await held_out(), actual))
            request = as_request(item)
            predictor.observe(request, await predictor.predict(request), item.actual)
        predictor.wait_idle()
        final = await held_out()
        if curve is not None:  # -1: after all the train folds (their sizes differ by one)
            curve.setdefault(-1, []).append(_tau(final, actual))
        return final
    finally:
        predictor.close()


def _tau(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(kendalltau(predicted, actual).statistic) if np.ptp(predicted) > 0 else 0.0


def _ranked(scores_train: np.ndarray, train: Sequence[Labelled], scores_test: np.ndarray) -> np.ndarray:
    """Ranker scores → lengths by the training fold's quantiles (keeps the order)."""
    return ScoreToLength.fit(scores_train, np.array([t.actual for t in train], dtype=float))(scores_test)


async def fold_predictions(
    setup: Setup, train: Sequence[Labelled], test: Sequence[Labelled], curves: dict[str, dict[int, list[float]]]
) -> dict[str, np.ndarray]:
    """Every method's predictions for the held-out fold."""
    texts = [t.text for t in test]
    out: dict[str, np.ndarray] = {}
    replay = None
    if setup.variant is not None:
        replay = ReplaySelf([*train, *test], setup.variant)
        out[f"self-prediction ({setup.variant}, expectation)"] = np.array(
            [(t.variants.get(setup.variant) or {}).get("expect", FALLBACK_TOKENS) for t in test]
        )
    out["prompt length"] = np.array([count_tokens(t) for t in texts], dtype=float)
    out["proxy label itself: ShareGPT's answer length (not a feature)"] = np.array(
        [min(t.reference_tokens, t.max_tokens) for t in test], dtype=float
    )
    ranker_train, ranker_test = ranker_rows(setup, train, False), ranker_rows(setup, test, False)
    out["LTR baseline: ListMLE on dev proxy lengths"] = _ranked(
        setup.ranker.score(ranker_train), train, setup.ranker.score(ranker_test)
    )
    rows_train, rows_test = ranker_rows(setup, train, True), ranker_rows(setup, test, True)
    fitted = ListMLERanker.fit(rows_train, np.array([t.actual for t in train], dtype=float), lists=500)
    out["LTR baseline: ListMLE on the train folds' actual lengths"] = _ranked(
        fitted.score(rows_train), train, fitted.score(rows_test)
    )
    embeddings = np.stack([setup.embedder.embed(t) for t in texts]) if setup.embedder else None
    out[COLD] = np.expm1(setup.pretrained.score(texts, dense_rows(texts, embeddings)))
    name = "learned, online (after the train folds)"
    out[name] = await _online(setup, setup.embedder, setup.pretrained, train, test, replay, curves.setdefault(name, {}))
    for label, (embedder, pretrained) in setup.ablations.items():
        out[label] = await _online(setup, embedder, pretrained, train, test, replay, None)
    return out


def compare(
    setup: Setup, labelled: Sequence[Labelled], folds: int = 5, repeats: int = 2, seed: int = 0,
    on_fold: Callable[[int, int], None] = lambda r, f: None,
) -> dict[str, Any]:
    """Pooled out-of-fold metrics per method (mean and sd over repeats) and learning curves."""
    actual = np.array([t.actual for t in labelled], dtype=float)
    per_repeat: dict[str, list[dict[str, float]]] = {}
    per_fold: dict[str, list[dict[str, float]]] = {}
    curves: dict[str, dict[int, list[float]]] = {}
    first_repeat: dict[str, np.ndarray] = {}
    for repeat in range(repeats):
        order = np.random.default_rng(seed + repeat).permutation(len(labelled))
        predicted: dict[str, np.ndarray] = {}
        for f, held in enumerate(np.array_split(order, folds)):
            held_set = set(held.tolist())
            train = [labelled[i] for i in order if i not in held_set]
            test = [labelled[i] for i in held]
            for name, values in asyncio.run(fold_predictions(setup, train, test, curves)).items():
                predicted.setdefault(name, np.empty(len(labelled)))[held] = values
                per_fold.setdefault(name, []).append(accuracy(values, actual[held]))
            on_fold(repeat, f)
        for name, values in predicted.items():
            per_repeat.setdefault(name, []).append(accuracy(values, actual))
        if repeat == 0:
            first_repeat = predicted
    fold_tau = {name: np.nan_to_num([m["kendall_tau"] for m in ms]) for name, ms in per_fold.items()}
    cold = fold_tau[COLD]
    return {
        "n": len(labelled),
        "folds": folds,
        "repeats": repeats,
        "variant": setup.variant,
        "metrics": _summary(per_fold),
        "pooled": _summary(per_repeat),
        "per_fold_tau": {name: taus.tolist() for name, taus in fold_tau.items()},
        # Paired by fold: tau minus the cold (pretrained-only) tau on the same held-out prompts.
        "tau_minus_cold": {
            name: {"mean": float((taus - cold).mean()), "se": float((taus - cold).std(ddof=1) / np.sqrt(len(cold)))}
            for name, taus in fold_tau.items() if name != COLD
        },
        "curves": {
            name: {str(n if n >= 0 else len(labelled) - len(labelled) // folds): float(np.mean(v))
                   for n, v in sorted(c.items(), key=lambda kv: kv[0] if kv[0] >= 0 else 1 << 30)}
            for name, c in curves.items()
        },
        "out_of_fold": {name: values.tolist() for name, values in first_repeat.items()},
    }


def _summary(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and sd of each metric over runs (NaN tau of a constant predictor counts as 0)."""
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name, ms in runs.items():
        values = {key: np.nan_to_num([m[key] for m in ms]) for key in ms[0]}
        summary[name] = {key: {"mean": float(v.mean()), "sd": float(v.std())} for key, v in values.items()}
    return summary
