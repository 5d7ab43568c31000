"""`predict report`: accuracy of each postfix variant and baseline, raw and calibrated, from eval JSONL.

Calibrated figures are cross-validated: each prompt's calibrated prediction comes
from a calibrator fitted on the other folds only, so nothing leaks from its answer.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from lengthwise.core.io import read_jsonl
from lengthwise.core.stats import kendall_tau
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.predict.calibration import Calibrator
from lengthwise.predict.self_query.distribution import CDF_POINTS, LengthDistribution

#: Multi-feature calibrations of one variant: a few moments plus the prompt length,
#: and the distribution's shape (its CDF at a few lengths).
RICH_FEATURES = ("expect", "entropy", "prompt_tokens")
SHAPE_FEATURES = ("expect", *(f"cdf_{t}" for t in CDF_POINTS), "entropy", "prompt_tokens")


def accuracy(predicted: Sequence[float], actual: Sequence[float]) -> dict[str, float]:
    """Kendall tau-b, Spearman, MAE and the share of predictions within 2x of the truth."""
    pred, act = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    constant = np.ptp(pred) == 0 or np.ptp(act) == 0
    ratio = np.maximum(pred, 1.0) / np.maximum(act, 1.0)
    return {
        "kendall_tau": kendall_tau(pred, act),
        "spearman": float("nan") if constant else float(spearmanr(pred, act).statistic),
        "mae": float(np.mean(np.abs(pred - act))),
        "within_2x": float(np.mean((ratio >= 0.5) & (ratio <= 2.0))),
    }


def fold_split(n: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """The same shuffled k-fold split for every row of a report."""
    return np.array_split(np.random.default_rng(seed).permutation(n), min(folds, n))


def cross_validated(
    features: Sequence[Mapping[str, float] | None],
    actual: Sequence[float],
    make: Callable[[], Calibrator],
    folds: int = 5,
) -> np.ndarray:
    """Out-of-fold calibrated predictions; rows lacking features get the fold's prior (median)."""
    n = len(actual)
    predicted = np.empty(n)
    for fold in fold_split(n, folds):
        held_out = set(fold.tolist())
        calibrator = make()
        train = [(calibrator.row(features[i]), actual[i]) for i in range(n) if i not in held_out and features[i]]
        train = [(row, y) for row, y in train if row is not None]
        calibrator.fit([row for row, _ in train], [y for _, y in train])
        for i in fold:
            predicted[i] = calibrator.predict(features[i] or {}, calibrator.prior(FALLBACK_TOKENS))
    return predicted


def tau_within_folds(predicted: np.ndarray, actual: np.ndarray, folds: int) -> float:
    """Mean Kendall tau inside each held-out fold: how well one calibrator orders one queue.

    Pooling out-of-fold predictions mixes the scales of k different calibrators; a
    scheduler ranks its queue with a single one, which this measures.
    """
    taus = [accuracy(predicted[fold], actual[fold])["kendall_tau"] for fold in fold_split(len(actual), folds)]
    taus = [t for t in taus if not math.isnan(t)]
    return float(np.mean(taus)) if taus else float("nan")


def prompt_features(record: Mapping[str, Any]) -> dict[str, float]:
    return {"prompt_tokens": float(record["prompt_tokens_est"]), "max_tokens": float(record["max_tokens"])}


def variant_features(record: Mapping[str, Any], variant: str) -> dict[str, float] | None:
    """A record's features for one variant, as the online SelfPredictor builds them; None = fallback."""
    entry = record["variants"].get(variant) or {}
    features = prompt_features(record)
    if entry.get("parsed") is not None:
        features["greedy"] = min(max(float(entry["parsed"]), 1.0), float(record["max_tokens"]))
    dist = LengthDistribution.from_json(entry["distribution"]) if entry.get("distribution") else None
    if dist is not None:  # recomputed, so new summary features apply to old runs too
        features.update(dist.clipped(1.0, features["max_tokens"]).summary())
    elif "greedy" in features:
        features["expect"] = features["greedy"]
    else:
        return None
    return features


@dataclass(frozen=True)
class Row:
    name: str
    predicted: np.ndarray
    fallbacks: int
    calibrated: bool

    def metrics(self, actual: np.ndarray, folds: int) -> dict[str, Any]:
        return {
            "name": self.name,
            "fallbacks": self.fallbacks,
            "calibrated": self.calibrated,
            **accuracy(self.predicted, actual),
            "kendall_tau_within_folds": tau_within_folds(self.predicted, actual, folds),
        }


def evaluate(records: Sequence[Mapping[str, Any]], variants: Sequence[str], folds: int) -> tuple[list[Row], np.ndarray]:
    """Every predictor row of the report, on the same prompts."""
    actual = np.array([r["actual_tokens"] for r in records], dtype=float)
    rows: list[Row] = []

    def cv(name: str, feats: list[dict[str, float] | None], names: tuple[str, ...], method: str = "huber") -> None:
        predicted = cross_validated(feats, actual, lambda: Calibrator(features=names, method=method), folds)  # type: ignore[arg-type]
        rows.append(Row(name, predicted, sum(f is None for f in feats), True))

    for variant in variants:
        feats = [variant_features(r, variant) for r in records]
        missing = sum(f is None for f in feats)
        greedy = [f.get("greedy", FALLBACK_TOKENS) if f else FALLBACK_TOKENS for f in feats]
        rows.append(Row(f"{variant}: greedy", np.array(greedy), missing, False))
        rows.append(Row(f"{variant}: expect", np.array([f["expect"] if f else FALLBACK_TOKENS for f in feats]), missing, False))
        cv(f"{variant}: expect → isotonic", feats, ("expect",), "isotonic")
        cv(f"{variant}: expect → huber", feats, ("expect",))
        cv(f"{variant}: expect+entropy+prompt → huber", feats, RICH_FEATURES)
        cv(f"{variant}: distribution shape+prompt → huber", feats, SHAPE_FEATURES)
    prompt = [prompt_features(r) for r in records]
    rows.append(Row("prompt length (raw)", np.array([f["prompt_tokens"] for f in prompt]), 0, False))
    cv("prompt length → huber", prompt, ("prompt_tokens",))
    combined = []
    for record in records:
        feats = prompt_features(record)
        for variant in variants:
            vf = variant_features(record, variant)
            feats[f"expect_{variant}"] = vf["expect"] if vf else FALLBACK_TOKENS
        combined.append(feats)
    names = ("prompt_tokens", *(f"expect_{v}" for v in variants))
    cv("all variants + prompt → huber", combined, names)
    rows.append(Row("constant (median) = FCFS", cross_validated([None] * len(actual), actual, Calibrator, folds), 0, True))
    return rows, actual


#: How many prompt tokens cost as much engine time as one output token, on vLLM CPU
#: (docs: engines notes): a 652-token prefill takes 2.2 s (3.4 ms a token), one decode
#: token 100-170 ms alone and ~35 ms a sequence when four decode together; so 10-37.
PREFILL_TOKENS_PER_DECODE_TOKEN = (10.0, 37.0)


def engine_share(extra_prefill: float, extra_decode: float, prefill: float, decode: float) -> list[float]:
    """Extra engine time relative to the request alone, for each prefill/decode cost ratio."""
    return [
        (extra_prefill / ratio + extra_decode) / (prefill / ratio + decode) for ratio in PREFILL_TOKENS_PER_DECODE_TOKEN
    ]


def overhead(records: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> dict[str, Any]:
    """What the prediction query adds per request, and whether the real request reuses its prefix.

    Extra prefill = the query's prompt tokens minus what the real request then found
    cached; extra decode = the query's output tokens. Latencies include queueing on
    the shared engine, for the query and the real request alike.
    """
    long_prompts = [r for r in records if r["prompt_tokens"] >= 256]
    cacheable = sum((r["prompt_tokens"] - 1) // 128 * 128 for r in long_prompts)
    prompt_tokens = sum(r["prompt_tokens"] for r in records)
    output_tokens = sum(r["actual_tokens"] for r in records)
    result: dict[str, Any] = {
        "real": {
            "prompts": len(records),
            "mean_prompt_tokens": prompt_tokens / len(records),
            "mean_output_tokens": output_tokens / len(records),
            "share_at_max_tokens": float(np.mean([r["finish_reason"] == "length" for r in records])),
            "mean_cached_tokens": float(np.mean([r["cached_tokens"] for r in records])),
            "prompts_over_256_tokens": len(long_prompts),
            "share_of_those_with_cache_hit": float(np.mean([r["cached_tokens"] > 0 for r in long_prompts])) if long_prompts else None,
            "cached_of_cacheable_blocks": sum(r["cached_tokens"] for r in long_prompts) / cacheable if cacheable else None,
            "p50_ttft_s": float(np.median([r["ttft_s"] for r in records if r["ttft_s"] is not None])),
            "mean_latency_s": sum(r["latency_s"] for r in records) / len(records),
        },
        "prefill_tokens_per_decode_token": PREFILL_TOKENS_PER_DECODE_TOKEN,
    }
    for variant in variants:
        entries = [(r, r["variants"][variant]) for r in records if "latency_s" in r["variants"].get(variant, {})]
        if not entries:
            continue
        extra_prefill = sum(max(e["prompt_tokens"] - r["cached_tokens"], 0) for r, e in entries)
        extra_decode = sum(e["completion_tokens"] for _, e in entries)
        real_prefill = sum(r["prompt_tokens"] for r, _ in entries)
        real_decode = sum(r["actual_tokens"] for r, _ in entries)
        result[variant] = {
            "queries": len(entries),
            "mean_query_prompt_tokens": float(np.mean([e["prompt_tokens"] for _, e in entries])),
            "mean_extra_prefill_tokens": extra_prefill / len(entries),
            "mean_extra_decode_tokens": extra_decode / len(entries),
            "extra_engine_time_share": engine_share(extra_prefill, extra_decode, real_prefill, real_decode),
            "p50_query_latency_s": float(np.median([e["latency_s"] for _, e in entries])),
            "query_latency_vs_request_latency": sum(e["latency_s"] for _, e in entries) / sum(r["latency_s"] for r, _ in entries),
            "distinct_greedy_answers": len({e.get("text") for _, e in entries}),
            "top_greedy_answers": Counter(str(e.get("text")) for _, e in entries).most_common(4),
        }
    return result


def plot(records: Sequence[Mapping[str, Any]], variants: Sequence[str], rows: Sequence[Row], path: Path) -> None:
    """The seed's plot per variant: raw prediction vs actual (log-log, y=x), the histogram of
    predicted values (quantization), and the cross-validated calibrated prediction vs actual."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actual = np.array([r["actual_tokens"] for r in records], dtype=float)
    by_name = {row.name: row for row in rows}
    panels = [*variants, "prompt length"]
    fig, axes = plt.subplots(len(panels), 3, figsize=(15, 4.2 * len(panels)), squeeze=False)
    bins = np.logspace(0, math.log10(max(float(actual.max()), 10.0) * 2), 40)
    for ax_row, panel in zip(axes, panels, strict=True):
        if panel == "prompt length":
            raw = {"prompt tokens": by_name["prompt length (raw)"].predicted}
            cal = by_name["prompt length → huber"]
        else:
            raw = {
                "expectation of the logprob distribution": by_name[f"{panel}: expect"].predicted,
                "greedy answer": by_name[f"{panel}: greedy"].predicted,
            }
            cal = by_name[f"{panel}: expect+entropy+prompt → huber"]
        scatter, hist, calibrated = ax_row
        for (label, values), marker in zip(raw.items(), ("o", "x"), strict=False):
            tau = accuracy(values, actual)["kendall_tau"]
            scatter.scatter(values, actual, s=12, alpha=0.5, marker=marker, label=f"{label} (τ={tau:.2f})")
            hist.hist(np.maximum(values, 1), bins=bins, alpha=0.6, label=label)
        tau = accuracy(cal.predicted, actual)["kendall_tau"]
        calibrated.scatter(cal.predicted, actual, s=12, alpha=0.5, color="tab:green", label=f"{cal.name} (CV, τ={tau:.2f})")
        for ax in (scatter, calibrated):
            ax.set(xscale="log", yscale="log", xlabel="predicted tokens", ylabel="actual output tokens")
            ax.plot([1, 1000], [1, 1000], color="gray", linestyle="--", linewidth=1, label="y = x")
            ax.legend(fontsize=8, loc="upper left")
        scatter.set_title(f"{panel}: raw prediction vs actual")
        calibrated.set_title(f"{panel}: calibrated (cross-validated)")
        hist.set(xscale="log", xlabel="predicted tokens", ylabel="prompts", title=f"{panel}: predicted values")
        hist.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(jsonl: Path, out_dir: Path, folds: int = 5, console: Console | None = None) -> dict[str, Any]:
    """Print the tables and write report.json and predict_eval.png into `out_dir`."""
    console = console or Console()
    records = [r for r in read_jsonl(jsonl) if r.get("actual_tokens", 0) > 0]
    if len(records) < folds:
        raise ValueError(f"{jsonl}: {len(records)} complete records; need at least {folds}")
    variants = list(records[0]["variants"])
    rows, actual = evaluate(records, variants, folds)
    metrics = [row.metrics(actual, folds) for row in rows]
    costs = overhead(records, variants)
    table = Table(title=f"Length prediction on {len(records)} prompts ({jsonl.name}); calibrated rows: {folds}-fold CV")
    for column in ("predictor", "fallbacks", "Kendall τ", "τ within folds", "Spearman", "MAE", "within 2×"):
        table.add_column(column, justify="left" if column == "predictor" else "right", overflow="fold")
    for m in metrics:
        table.add_row(
            m["name"],
            str(m["fallbacks"]),
            _fmt(m["kendall_tau"]),
            _fmt(m["kendall_tau_within_folds"]),
            _fmt(m["spearman"]),
            f"{m['mae']:.0f}",
            f"{m['within_2x']:.0%}",
        )
    console.print(table)
    console.print_json(json.dumps(costs))
    plot(records, variants, rows, out_dir / "predict_eval.png")
    report = {"records": len(records), "folds": folds, "accuracy": metrics, "overhead": costs}
    (out_dir / "report.json").write_text(json.dumps(_without_nan(report), indent=1))
    console.print(f"wrote {out_dir / 'report.json'} and {out_dir / 'predict_eval.png'}")
    return report


def _fmt(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.3f}"


def _without_nan(value: Any) -> Any:
    """NaN (an undefined correlation) → null, which JSON can hold."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nan(v) for v in value]
    return value
