"""Train rankers on the serving model's own lengths and grade every predictor on the held-out test split.

Protocol (the split is `label_split`, fixed by prompt id): each label-trained scorer
is fit on the *train* part, its one hyperparameter picked by Kendall tau on the
*validation* part, and its score → length distribution (a censored log-normal,
`distribution.Calibration`) fit on the validation part's scores, which are out of
sample. The *test* part is touched once, to grade, and what is graded is exactly what
would ship. The shipped learned predictor is graded as the gateway runs it, through
`predict`/`observe`: cold (its pretrained stage), and after observing every train and
validation completion (its online stage, which learns from the same labels).

Grades: Kendall tau-b of the predicted tokens against the actual ones with a
jackknife 95% interval (`core.stats`), MAE of the predicted tokens (the expected
served length, what schedulers order by) and of the predicted median, and the
coverage of the central 50% and 90% intervals of the served length min(L, cap): an
answer cut at the cap is covered when the interval reaches the cap.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lengthwise.core.stats import kendall_tau, kendall_tau_ci, kendall_tau_difference_ci
from lengthwise.predict.learned.distribution import Calibration, capped_quantiles, expected_capped
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.learned.rank_stage import LinearScorer, RankStage, Stage, rank_rows
from lengthwise.predict.offline.label_split import PARTS, split_of
from lengthwise.predict.offline.learned_data import Labelled
from lengthwise.predict.offline.learned_eval import as_request, dense_rows
from lengthwise.predict.offline.ranker import ListMLERanker, PairwiseRanker

#: Quantile levels every graded distribution reports: the central 50% and 90% intervals and the median.
LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Columns a label-trained ranker trusts more (smaller L2): the proxy (and label-ridge) score and log prompt tokens.
TRUSTED_PENALTY = 1e-2
#: The label ridge's L2 (fixed before the test split was graded: picked by cross-validation on train+val).
LABEL_RIDGE_ALPHA = 30.0
#: Folds of the cross-fitting that gives each train prompt a label-ridge score from a ridge that did not see it.
LABEL_RIDGE_FOLDS = 5
PAIRWISE = "ranker: pairwise, censored, on the labels"
RANK_STAGE = "rank stage (the pairwise ranker as the learned predictor's pretrained stage), cold"
SHIPPED_COLD = "shipped learned, cold (pretrained stage)"
SHIPPED_ONLINE = "shipped learned, online after the train+val completions"
#: Like for like: each pretrained stage plus the online stage after the same (validation) completions.
RANK_ONLINE = "rank stage + online stage after the val completions"
SHIPPED_ONLINE_VAL = "shipped learned, online after the val completions"


@dataclass
class Data:
    """The labelled prompts as arrays, with their part of the split."""

    items: list[Labelled]
    texts: list[str]
    dense: np.ndarray  # [log prompt tokens, embedding]
    rows: np.ndarray  # the ranker's input without the label ridge: [proxy score, dense]
    lengths: np.ndarray
    capped: np.ndarray
    part: np.ndarray
    label: Pretrained  # the label ridge, fit on the train part
    stacked: np.ndarray  # the rank stage's input: [proxy score, label-ridge score (cross-fit on train), dense]

    def where(self, *parts: str) -> np.ndarray:
        return np.flatnonzero(np.isin(self.part, parts))


def build_data(items: Sequence[Labelled], embeddings: np.ndarray, proxy: Pretrained) -> Data:
    texts = [item.text for item in items]
    dense = dense_rows(texts, embeddings)
    lengths = np.array([item.actual for item in items], dtype=np.float64)
    part = np.array([split_of(item.id) for item in items])
    proxy_scores = proxy.score(texts, dense)
    label, label_scores = _label_ridge(texts, dense, lengths, np.flatnonzero(part == "train"))
    return Data(
        list(items), texts, dense, rank_rows(proxy_scores, dense), lengths,
        np.array([item.capped for item in items], dtype=bool), part, label,
        rank_rows(proxy_scores, dense, label_scores),
    )


def _label_ridge(texts: list[str], dense: np.ndarray, lengths: np.ndarray,
                 train: np.ndarray) -> tuple[Pretrained, np.ndarray]:
    """The ridge on the train part's lengths, and its score for every prompt: for a train prompt, from
    the ridge fit on the other train folds (stacking on in-sample scores would overrate the column)."""
    def fit(idx: np.ndarray) -> Pretrained:
        return Pretrained.fit([texts[i] for i in idx], dense[idx], lengths[idx], clip=int(lengths.max()),
                              alpha=LABEL_RIDGE_ALPHA, meta={"label": "the serving model's labelled lengths"})

    def score(model: Pretrained, idx: np.ndarray) -> np.ndarray:
        return model.score([texts[i] for i in idx], dense[idx])

    model, scores = fit(train), np.zeros(len(texts))
    rest = np.setdiff1d(np.arange(len(texts)), train)
    scores[rest] = score(model, rest)
    shuffled = np.random.default_rng(0).permutation(train)
    for k in range(LABEL_RIDGE_FOLDS):
        held = shuffled[k::LABEL_RIDGE_FOLDS]
        scores[held] = score(fit(np.setdiff1d(train, held)), held)
    return model, scores


Scorer = Callable[[np.ndarray], np.ndarray]  # indices into Data → scores (higher: longer)


@dataclass(frozen=True)
class RowScorer:
    """A linear model over ranker rows (`Data.rows` or `Data.stacked`), called with indices into them."""

    model: LinearScorer
    rows: np.ndarray

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return self.model.score(self.rows[idx])


@dataclass(frozen=True)
class Candidate:
    """A scorer family fit on the labels, with the grid its hyperparameter is picked from."""

    name: str
    fit: Callable[[Data, np.ndarray, float], Scorer]
    grid: tuple[float, ...] = (0.0,)


def _fit_pairwise(rows: np.ndarray, data: Data, train: np.ndarray, l2: float) -> RowScorer:
    """The censored pairwise ranker on `rows`, whose columns before the dense block (the
    scores, then log prompt tokens) are trusted."""
    penalty = np.ones(rows.shape[1])
    penalty[:rows.shape[1] - data.dense.shape[1] + 1] = TRUSTED_PENALTY
    return RowScorer(PairwiseRanker.fit(rows[train], data.lengths[train], data.capped[train], l2=l2, penalty=penalty),
                     rows)


def _pairwise(data: Data, train: np.ndarray, l2: float) -> RowScorer:
    return _fit_pairwise(data.stacked, data, train, l2)


def _listmle(data: Data, train: np.ndarray, l2: float) -> RowScorer:
    return RowScorer(ListMLERanker.fit(data.rows[train], data.lengths[train], lists=1000, l2=l2), data.rows)


def _ridge(data: Data, train: np.ndarray, alpha: float) -> Scorer:
    texts = [data.texts[i] for i in train]
    model = Pretrained.fit(texts, data.dense[train], data.lengths[train], clip=int(data.lengths.max()), alpha=alpha)
    return lambda idx: model.score([data.texts[i] for i in idx], data.dense[idx])


CANDIDATES = (
    Candidate("prompt length (log tokens, calibrated)", lambda data, train, h: (lambda idx: data.rows[idx, 1])),
    Candidate("ridge (TF-IDF + dense), fit on the labels", _ridge, (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)),
    Candidate("ListMLE on the labels (Fu et al.-style)", _listmle, (1e-3, 1e-2, 1e-1, 1.0, 10.0)),
    Candidate(PAIRWISE, _pairwise, (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)),
)


@dataclass(frozen=True)
class Trained:
    """A candidate fit on train, its hyperparameter picked and its distribution fit on validation."""

    scorer: Scorer
    hyper: float
    val_tau: float
    calibration: Calibration


def train(candidate: Candidate, data: Data) -> Trained:
    """Fit on train for every hyperparameter; keep the best by validation tau (first of equals)."""
    fit_on, val = data.where("train"), data.where("val")
    fits = [(candidate.fit(data, fit_on, hyper), hyper) for hyper in candidate.grid]
    taus = [float(np.nan_to_num(kendall_tau(scorer(val), data.lengths[val]), nan=-1.0)) for scorer, _ in fits]
    best = int(np.argmax(taus))
    scorer, hyper = fits[best]
    return Trained(scorer, hyper, taus[best], Calibration.fit(scorer(val), data.lengths[val], data.capped[val]))


Predicted = tuple[np.ndarray, list[dict[float, float]] | None]  # tokens, quantiles per prompt


def from_distribution(mu: np.ndarray, sigma: float, caps: np.ndarray) -> Predicted:
    tokens = np.array([max(expected_capped(m, sigma, c), 1.0) for m, c in zip(mu, caps, strict=True)])
    return tokens, [capped_quantiles(m, sigma, c, LEVELS) for m, c in zip(mu, caps, strict=True)]


def grade(predicted: Predicted, actual: np.ndarray, caps: np.ndarray) -> dict[str, Any]:
    """Tau-b with its interval, MAE of the tokens and of the median, interval coverage (observed and nominal)."""
    tokens, quantiles = predicted
    row: dict[str, Any] = {**kendall_tau_ci(tokens, actual).to_dict(), "mae": float(np.mean(np.abs(tokens - actual)))}
    if quantiles and all(set(LEVELS) <= set(q) for q in quantiles):
        q = {level: np.array([d[level] for d in quantiles]) for level in LEVELS}
        row["mae_median"] = float(np.mean(np.abs(q[0.5] - actual)))
        for name, lo, hi in (("50", 0.25, 0.75), ("90", 0.05, 0.95)):
            row[f"cover{name}"] = float(np.mean((q[lo] <= actual) & (actual <= q[hi])))
            row[f"nominal{name}"] = float(np.mean(_nominal(q[lo], q[hi], lo, hi, caps)))
    return row


def _nominal(low: np.ndarray, high: np.ndarray, lo: float, hi: float, caps: np.ndarray) -> np.ndarray:
    """The probability the prediction itself gives its interval of the served length min(L, cap).

    Not simply hi - lo: where the upper quantile reaches the cap the interval also holds
    the mass at the cap (every longer answer is cut there), and where the lower one is
    clipped to 1 token it holds everything below.
    """
    return np.where(high >= caps, 1.0, hi) - np.where(low <= 1.0, 0.0, lo)


async def through_predictor(predictor: LearnedPredictor, data: Data, observe: np.ndarray,
                            test: np.ndarray) -> tuple[Predicted, Predicted]:
    """The test part's predictions before and after `observe`'s completions, as the gateway makes them."""

    async def predict_test() -> Predicted:
        predictions = [await predictor.predict(as_request(data.items[i])) for i in test]
        return np.array([p.tokens for p in predictions]), [p.quantiles for p in predictions]

    try:
        cold = await predict_test()
        for i in observe:
            request = as_request(data.items[i])
            predictor.observe(request, await predictor.predict(request), data.items[i].actual)
        predictor.wait_idle()
        return cold, await predict_test()
    finally:
        predictor.close()


def rank_stage(trained: Trained, proxy: Pretrained, data: Data) -> RankStage:
    """The trained pairwise candidate as the learned predictor's pretrained stage."""
    assert isinstance(trained.scorer, RowScorer)
    model = trained.scorer.model
    meta = {"kind": "pairwise ranker on the serving model's labels, stacked on a ridge on them", "l2": trained.hyper,
            "label_ridge_alpha": LABEL_RIDGE_ALPHA,
            "n_train": len(data.where("train")), "n_val": len(data.where("val")), "proxy": proxy.meta.get("fingerprint"),
            "fingerprint": hashlib.blake2b(model.weights.tobytes(), digest_size=8).hexdigest()}
    return RankStage(proxy, LinearScorer(model.mean, model.scale, model.weights), trained.calibration, meta, data.label)


def evaluate(data: Data, embedder: Any, proxy: Pretrained, shipped: Stage,
             unseen_by_shipped: np.ndarray | None = None) -> tuple[dict[str, Any], RankStage]:
    """Every predictor's grades on the test part, and the pairwise ranker as a stage to ship.

    `unseen_by_shipped` (a mask over the test part) marks the test prompts whose recorded
    answers the shipped stage's proxy was not pretrained on: the paired differences are
    repeated on them, where neither stage has seen anything of the prompt.
    """
    test, seen = data.where("test"), data.where("train", "val")
    actual, caps = data.lengths[test], np.array([data.items[i].max_tokens for i in test], dtype=np.float64)
    predicted: dict[str, Predicted] = {}
    trained_info: dict[str, dict[str, float]] = {}
    stage = None
    for candidate in CANDIDATES:
        trained = train(candidate, data)
        trained_info[candidate.name] = {"hyper": trained.hyper, "val_tau": trained.val_tau,
                                        **trained.calibration.to_json()}
        if candidate.name == PAIRWISE:  # graded as it would ship: the learned predictor's pretrained stage
            stage = rank_stage(trained, proxy, data)
            predictor = LearnedPredictor(None, embedder=embedder, pretrained=stage)
            predicted[RANK_STAGE], predicted[RANK_ONLINE] = asyncio.run(
                through_predictor(predictor, data, data.where("val"), test)
            )
        else:
            mu = trained.calibration.mu(trained.scorer(test))
            predicted[candidate.name] = from_distribution(mu, trained.calibration.sigma, caps)
    predictor = LearnedPredictor(None, embedder=embedder, pretrained=shipped)
    predicted[SHIPPED_COLD], predicted[SHIPPED_ONLINE] = asyncio.run(through_predictor(predictor, data, seen, test))
    predictor = LearnedPredictor(None, embedder=embedder, pretrained=shipped)
    _, predicted[SHIPPED_ONLINE_VAL] = asyncio.run(through_predictor(predictor, data, data.where("val"), test))
    reference = np.array([min(data.items[i].reference_tokens, data.items[i].max_tokens) for i in test], float)
    predicted["(ShareGPT's recorded answer length: not a feature)"] = (reference, None)
    tie_break = np.random.default_rng(0).random(len(test)) * data.capped[test]
    predicted["(ceiling: the true order, capped answers tied at random)"] = (actual + tie_break, None)
    assert stage is not None
    pairs = ((RANK_STAGE, SHIPPED_COLD), (RANK_STAGE, SHIPPED_ONLINE), (RANK_ONLINE, SHIPPED_ONLINE_VAL))
    subsets = {"": np.ones(len(test), dtype=bool)}
    if unseen_by_shipped is not None:
        subsets[f", on the {int(unseen_by_shipped.sum())} test prompts outside the shipped proxy's range"] = unseen_by_shipped
    result = {
        "n": {part: int(len(data.where(part))) for part in PARTS},
        "capped_share": {part: float(data.capped[data.where(part)].mean()) for part in PARTS if len(data.where(part))},
        "trained": trained_info,
        "rows": {name: grade(values, actual, caps) for name, values in predicted.items()},
        "paired": {
            f"{new} − {old}{label}": kendall_tau_difference_ci(predicted[new][0][mask], predicted[old][0][mask],
                                                               actual[mask]).to_dict()
            for label, mask in subsets.items() for new, old in pairs
        },
    }
    return result, stage


#: Completions the online stage observes in `online_curve`.
CURVE_POINTS = (30, 60, 100, 200)


def online_curve(data: Data, embedder: Any, proxy: Pretrained, l2: float, repeats: int = 8,
                 held_out: int = 100, ranker_prompts: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    """Held-out tau of the online stage over each pretrained stage after n completions, on train+val only.

    Each repeat splits the train and validation prompts at random: `held_out` to grade,
    `ranker_prompts` to fit a pairwise ranker (the rank stage), the rest streamed as
    completions. Never touches the test part, so it can guide the online stage's design. The
    ranker here has no label-ridge column (`Data.rows`): that column is cross-fit on the whole
    train part, so it would carry labels beyond the repeat's own.
    """
    rng = np.random.default_rng(seed)
    taus: dict[str, dict[int, list[float]]] = {}
    for _ in range(repeats):
        order = rng.permutation(data.where("train", "val"))
        held, fit_on, stream = order[:held_out], order[held_out:held_out + ranker_prompts], order[held_out + ranker_prompts:]
        model = _fit_pairwise(data.rows, data, fit_on, l2).model
        calibration = Calibration.fit(model.score(data.rows[fit_on]), data.lengths[fit_on], data.capped[fit_on])
        stage = RankStage(proxy, model, calibration, {})
        variants = {"proxy stage (pretrained.npz)": (proxy, 100), "rank stage": (stage, 100),
                    "rank stage, full model from 30 completions": (stage, 30)}
        for name, (pretrained, full_after) in variants.items():
            for n in [n for n in CURVE_POINTS if n <= len(stream)]:
                predictor = LearnedPredictor(None, embedder=embedder, pretrained=pretrained, full_after=full_after)
                cold, after = asyncio.run(through_predictor(predictor, data, stream[:n], held))
                curve = taus.setdefault(name, {})
                curve.setdefault(0, []).append(kendall_tau(cold[0], data.lengths[held]))
                curve.setdefault(n, []).append(kendall_tau(after[0], data.lengths[held]))
    return {name: {str(n): float(np.mean(v)) for n, v in sorted(curve.items())} for name, curve in taus.items()}


#: Labelled prompts the pairwise ranker is fit on in `label_curve`.
LABEL_POINTS = (50, 100, 200, 400)


def label_curve(data: Data, l2: float, repeats: int = 8, held_out: int = 100, seed: int = 0) -> dict[str, float]:
    """Held-out tau of the pairwise ranker fit on m labelled prompts, on train+val only: do more labels help?
    (Without the label-ridge column, as in `online_curve`.)"""
    rng = np.random.default_rng(seed)
    taus: dict[str, list[float]] = {}
    for _ in range(repeats):
        order = rng.permutation(data.where("train", "val"))
        held, pool = order[:held_out], order[held_out:]
        taus.setdefault("0 (proxy score)", []).append(kendall_tau(data.rows[held, 0], data.lengths[held]))
        for m in [m for m in LABEL_POINTS if m < len(pool)] + [len(pool)]:
            scorer = _fit_pairwise(data.rows, data, pool[:m], l2)
            taus.setdefault(str(m), []).append(kendall_tau(scorer(held), data.lengths[held]))
    return {m: float(np.mean(v)) for m, v in taus.items()}


def markdown(result: dict[str, Any]) -> str:
    """The results table: tau with its interval, MAE, interval coverage (observed / nominal), per predictor."""
    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        return "—" if value is None else format(value, fmt)

    lines = [
        "| predictor | Kendall τ-b [95% CI] | MAE | MAE of median | 50% interval: covers / nominal "
        "| 90% interval: covers / nominal |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in result["rows"].items():
        tau = "—" if row["tau"] is None else f"{row['tau']:.3f} [{cell(row, 'ci_low', '.3f')}, {cell(row, 'ci_high', '.3f')}]"
        cover = [f"{cell(row, f'cover{c}', '.2f')} / {cell(row, f'nominal{c}', '.2f')}" if f"cover{c}" in row else "—"
                 for c in ("50", "90")]
        lines.append(f"| {name} | {tau} | {row['mae']:.0f} | {cell(row, 'mae_median', '.0f')} | {cover[0]} | {cover[1]} |")
    lines += ["", "τ differences on the same test prompts (paired jackknife 95% CI):", ""]
    lines += [f"- {name}: {d['tau']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"
              for name, d in result["paired"].items() if d["ci_low"] is not None]
    labels = result.get("label_curve")
    if labels:
        lines += ["", "| pairwise ranker fit on (train+val only) | " + " | ".join(f"{m} labels" for m in labels) + " |",
                  "|---|" + "---|" * len(labels), "| held-out τ-b | " + " | ".join(f"{t:.3f}" for t in labels.values()) + " |"]
    curve = result.get("online_curve")
    if curve:
        points = list(next(iter(curve.values())))
        lines += ["", "| online stage over (train+val only) | " + " | ".join(f"{n} completions" for n in points) + " |",
                  "|---|" + "---|" * len(points)]
        lines += [f"| {name} | " + " | ".join(f"{tau:.3f}" for tau in taus.values()) + " |" for name, taus in curve.items()]
    return "\n".join(lines) + "\n"
