"""Self-prediction of several models on the same prompts, each against its own answer lengths, at one cap.

Takes `predict eval` JSONLs (one per model, same postfix variants and stated cap), keeps the prompts all of
them have, caps every answer length at --cap (an answer longer than that, or cut at a higher cap, counts as
--cap: what a run at max_tokens --cap sees, since the answers are greedy) and clips predictions into
[1, --cap] as the online predictor does. Prints and writes, per model and variant, Kendall tau-b with its
jackknife 95% interval for the greedy answer and for the logprob distribution's expectation, the prompt
length's tau as a reference, each later model's paired tau difference to the first, and whether the models
agree on which prompts get long answers.

    python benchmarks/selfpred_models.py docs/results/predict_eval/eval.jsonl \
        docs/results/selfpred-1.5b/eval.jsonl --cap 128 --out docs/results/selfpred-1.5b/compare.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.core.io import atomic_write_json, read_jsonl
from lengthwise.core.stats import kendall_tau_ci, kendall_tau_difference_ci
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.predict.offline.report import variant_features

KINDS = ("greedy", "expect")


def capped(record: dict[str, Any], cap: int) -> dict[str, Any]:
    return {**record, "max_tokens": cap, "actual_tokens": min(int(record["actual_tokens"]), cap)}


def predictions(records: list[dict[str, Any]], variant: str, kind: str) -> np.ndarray:
    feats = [variant_features(r, variant) for r in records]
    return np.array([f.get(kind, FALLBACK_TOKENS) if f else FALLBACK_TOKENS for f in feats], dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evals", type=Path, nargs="+", help="`predict eval` JSONL files, one per model")
    parser.add_argument("--cap", type=int, required=True)
    parser.add_argument("--variants", default="seed")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    runs = [{r["id"]: r for r in read_jsonl(path)} for path in args.evals]
    common = sorted(set.intersection(*(set(run) for run in runs)))
    models = [runs[i][common[0]]["model"] for i in range(len(runs))]
    records = {m: [capped(run[i], args.cap) for i in common] for m, run in zip(models, runs)}
    actual = {m: np.array([r["actual_tokens"] for r in rs], dtype=float) for m, rs in records.items()}
    rows, differences = [], []
    for model, rs in records.items():
        stated = {r.get("stated_max_tokens", r["max_tokens"]) for r in runs[models.index(model)].values()}
        rows.append({"model": model, "predictor": "prompt length", "stated_max_tokens": sorted(stated),
                     **kendall_tau_ci(np.array([r["prompt_tokens_est"] for r in rs]), actual[model]).to_dict()})
        for variant in args.variants.split(","):
            for kind in KINDS:
                predicted = predictions(rs, variant, kind)
                row = {"model": model, "predictor": f"{variant}: {kind}"}
                if kind == "greedy":
                    row["top_answers"] = Counter(str(r["variants"][variant].get("text")) for r in rs).most_common(4)
                rows.append({**row, **kendall_tau_ci(predicted, actual[model]).to_dict()})
    first = models[0]
    for model in models[1:]:
        for variant in args.variants.split(","):
            for kind in KINDS:
                differences.append({
                    "predictor": f"{variant}: {kind}", "model": model, "minus": first,
                    **kendall_tau_difference_ci(
                        predictions(records[model], variant, kind), predictions(records[first], variant, kind),
                        actual[model], second_actual=actual[first],
                    ).to_dict(),
                })  # fmt: skip
    lengths = {
        m: {"mean": round(float(a.mean()), 1), "share_at_cap": round(float((a >= args.cap).mean()), 3)}
        for m, a in actual.items()
    }
    agreement = [{"models": [first, m], **kendall_tau_ci(actual[m], actual[first]).to_dict()} for m in models[1:]]
    result = {"cap": args.cap, "n": len(common), "files": [str(p) for p in args.evals], "lengths": lengths,
              "rows": rows, "differences": differences, "length_agreement": agreement}  # fmt: skip
    for name, table in (("rows", rows), ("differences", differences), ("length_agreement", agreement)):
        print(name)
        for row in table:
            print("  " + json.dumps(row))
    print("lengths", json.dumps(lengths))
    if args.out:
        atomic_write_json(args.out, result, indent=1)


if __name__ == "__main__":
    main()
