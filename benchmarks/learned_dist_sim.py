"""Does a scheduler gain from the learned predictor's *distribution*? A replay of the labelled records.

Each labelled test prompt (the serving model's own length at max_tokens 256, never
trained on) carries what the shipped stage predicts for it: log1p(L) ~ Normal(mu, sigma).
Requests are drawn with replacement from those records, so every simulated request has a
real prompt's prediction and that prompt's real length: the predictor's joint behaviour
as measured, not a noise model. The same draws and arrivals are scheduled by each key:

- the point prediction, the median of min(L, cap);
- the expected served length E[min(L, cap)] (what `Prediction.tokens` is: expected service time);
- a tail-inflated expectation, E[min(L, cap)] with the spread widened by `--inflate`;
- the 90% quantile of min(L, cap).

The stage's spread is one number for every prompt, so each key is a monotone function of
mu: SJF orders alike by all of them except where a quantile reaches the cap (ties).
Keys that are *added* to something (sst: the prompt's prefill time; the deadline rule:
the queue's work) use the magnitudes, and there they can differ.

    python benchmarks/learned_dist_sim.py --seeds 5 --n 2000
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lengthwise.core.policy.registry import DEFAULT_POLICY
from lengthwise.predict.learned.distribution import capped_quantiles, expected_capped
from lengthwise.predict.learned.pretrained import SHIPPED
from lengthwise.predict.learned.rank_stage import RankStage, load_stage
from lengthwise.predict.offline.label_split import split_of
from lengthwise.predict.offline.learned_cli import LABELS_256, _embedder
from lengthwise.predict.offline.learned_data import embed_all, embedding_cache, load_labelled
from lengthwise.predict.offline.learned_eval import dense_rows
from lengthwise.sim.engine import EngineConfig
from lengthwise.sim.experiment import Arm, build_cost, run_arms, scale_to_load
from lengthwise.sim.workload import Workload
from lengthwise.workload.arrivals import gamma_arrivals

OUT = Path(__file__).resolve().parents[1] / "docs/results/labels/dist_sim.json"


def keys(mu: np.ndarray, sigma: float, caps: np.ndarray, inflate: float) -> dict[str, np.ndarray]:
    """Each scheduling key per record, in tokens."""
    def per(f: Callable[[float, float], float]) -> np.ndarray:
        return np.array([f(m, c) for m, c in zip(mu, caps, strict=True)])

    return {
        "point: median": per(lambda m, c: capped_quantiles(m, sigma, c, (0.5,))[0.5]),
        "expected served length": per(lambda m, c: expected_capped(m, sigma, c)),
        f"tail-inflated expectation (σ × {inflate})": per(lambda m, c: expected_capped(m, sigma * inflate, c)),
        "90% quantile": per(lambda m, c: capped_quantiles(m, sigma, c, (0.9,))[0.9]),
    }


def workload(prompt: np.ndarray, output: np.ndarray, n: int, seed: int, burst: bool) -> tuple[Workload, np.ndarray]:
    """`n` records drawn with replacement (Poisson arrivals at rate 1, or all at once), and the rows drawn."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(output), n)
    arrival = np.zeros(n) if burst else gamma_arrivals(n, 1.0, 1.0, seed)
    return Workload(arrival, prompt[rows], output[rows], output[rows].astype(float)), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, default=LABELS_256)
    parser.add_argument("--stage", type=Path, default=SHIPPED)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--seats", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--inflate", type=float, default=1.5)
    parser.add_argument("--policy", nargs="+", default=["sjf", DEFAULT_POLICY])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    stage = load_stage(args.stage)
    if not isinstance(stage, RankStage):
        raise SystemExit(f"{args.stage} holds no rank stage: no distribution to replay")
    items = [item for item in load_labelled([args.labels]) if item.text.strip() and split_of(item.id) == "test"]
    embedder = _embedder(True, 128)
    texts = [item.text for item in items]
    mu = stage.score(texts, dense_rows(texts, embed_all(embedder, texts, embedding_cache(embedder))))
    caps = np.array([item.max_tokens for item in items], dtype=float)
    by_key = keys(mu, stage.sigma, caps, args.inflate)
    prompt = np.array([max(item.prompt_tokens, 1) for item in items])
    output = np.array([item.actual for item in items])
    cost = build_cost()
    result: dict = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                    "records": len(items), "sigma": stage.sigma, "stage": stage.meta.get("fingerprint"), "cells": {}}
    reference = ["fcfs", *(f"{p}@oracle" for p in args.policy)]
    for seats in args.seats:
        config = EngineConfig(max_num_seqs=seats)
        for arrivals in ("burst", f"load {args.load}"):
            rows: dict[str, list[dict[str, float]]] = {}
            for seed in range(args.seeds):
                w, drawn = workload(prompt, output, args.n, seed, arrivals == "burst")
                if arrivals != "burst":
                    w, _ = scale_to_load(w, args.load, config, cost)
                runs = [(r.arm.spec, r.metrics) for r in run_arms(w, [Arm(a) for a in reference], config, cost)]
                for name, values in by_key.items():
                    runs += [(f"{r.arm.spec}, {name}", r.metrics)
                             for r in run_arms(w, [Arm(p) for p in args.policy], config, cost, values[drawn])]
                fcfs = dict(runs)["fcfs"]
                for arm, m in runs:
                    rows.setdefault(arm, []).append({
                        "mean": m["mean_e2el_ms"] / fcfs["mean_e2el_ms"], "p99": m["p99_e2el_ms"] / fcfs["p99_e2el_ms"],
                        "mean_e2el_ms": m["mean_e2el_ms"], "p99_e2el_ms": m["p99_e2el_ms"]})
            cell = f"{seats} seats, {arrivals}"
            result["cells"][cell] = rows
            print(f"\n{cell}: {len(items)} test records drawn {args.n} times, {args.seeds} seeds; ratio to FCFS (mean ± sd)")
            for arm, values in rows.items():
                mean, p99 = (np.array([v[k] for v in values]) for k in ("mean", "p99"))
                print(f"  {arm:70s} mean E2E {mean.mean():.3f} ± {mean.std():.3f}   p99 E2E {p99.mean():.3f} ± {p99.std():.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
