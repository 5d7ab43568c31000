"""Does a request still find its prompt in the engine's prefix cache after waiting in the gateway's queue?

The self-prediction query warms the engine's prefix cache with the prompt; in queue mode
the real request may wait long enough for the engine to evict it (the seed's extra
constraint). This sends `--requests` distinct prompts (`--words` words each, a unique tag
first: nothing cached before) at once to /v1/completions through the gateway in queue
mode (`--predictor`, `--max-inflight` per backend), so that a queue forms, and reads each
answer's queue wait, cached prompt tokens and end-to-end time.

Each `--windows` value is an arm: 0 queries every request on arrival (the gateway without
the rule), W >= 1 runs the query-window rule (`--query-window W`, `--cheap-predictor`).
Arms run in turn, `--rounds` times (interleaved, within `--budget` seconds), on a fresh gateway each; per arm it
prints the cached share (cached tokens over the prompt's cacheable whole blocks) as mean
and distribution, and mean E2E. With `--out`, every request and the table are written there
(requests.jsonl, appended after each run, and table.md).

    python benchmarks/gateway_prefix_cache.py [--engine-url http://127.0.0.1:8100] [--requests 12]
    python benchmarks/gateway_prefix_cache.py --engine-url http://127.0.0.1:8200 --requests 24 \\
        --max-inflight 2 --windows 0,2 --rounds 3 --out docs/results/eviction/window-rule
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lengthwise.bench.eviction import cacheable_tokens, unique_prompt
from lengthwise.core.headers import PREDICTOR, QUEUE_MS
from lengthwise.core.usage import cached_tokens
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.metrics import wait_bucket
from lengthwise.testing.gateway import running_gateway


def arm_name(window: int) -> str:
    return "every request queried on arrival" if window == 0 else f"query window W = {window}"


async def run_arm(args: argparse.Namespace, window: int, round_: int) -> list[dict[str, Any]]:
    """One burst through a fresh gateway: a row per request."""
    config = GatewayConfig(backends=(args.engine_url,), mode="queue", policy=args.policy, predictor=args.predictor,
                           max_inflight=args.max_inflight, prediction_timeout_s=args.prediction_timeout,
                           query_window=window, cheap_predictor=args.cheap_predictor)
    low, high = (int(x) for x in args.words.split("-"))
    rng = random.Random(f"{args.seed}:{round_}:{window}")
    async with running_gateway(config) as (_, url), httpx.AsyncClient(timeout=1800) as client:
        model = (await client.get(url + "/v1/models")).json()["data"][0]["id"]

        async def one(i: int) -> dict[str, Any]:
            prompt = unique_prompt(f"r{round_}-w{window}-{i}-{time.time_ns()}", rng.randint(low, high), i)
            body = {"model": model, "prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0,
                    "ignore_eos": True}
            started = time.monotonic()
            r = await client.post(url + "/v1/completions", json=body)
            r.raise_for_status()
            usage = r.json()["usage"]
            prompt_tokens, cached = usage["prompt_tokens"], cached_tokens(usage) or 0
            return {"arm": arm_name(window), "window": window, "round": round_, "request": i,
                    "e2e_s": time.monotonic() - started, "queue_s": float(r.headers[QUEUE_MS]) / 1e3,
                    "prompt_tokens": prompt_tokens, "cached_tokens": cached,
                    "share": cached / max(cacheable_tokens(prompt_tokens, args.block_size), 1),
                    "predictor": r.headers[PREDICTOR]}

        return list(await asyncio.gather(*(one(i) for i in range(args.requests))))


def summary(rows: list[dict[str, Any]], predictor: str) -> dict[str, Any]:
    """An arm's figures: cached share (mean, distribution), E2E and queue wait, per run and pooled."""
    share = np.array([r["share"] for r in rows])
    e2e = np.array([r["e2e_s"] for r in rows])
    runs = defaultdict(list)
    for r in rows:
        runs[r["round"]].append(r["e2e_s"])
    return {
        "requests": len(rows), "share_mean": float(share.mean()),
        "share_p10_p50_p90": [float(q) for q in np.quantile(share, [0.1, 0.5, 0.9])],
        "share_none": float(np.mean(share == 0)), "share_full": float(np.mean(share >= 1)),
        "e2e_mean_s": float(e2e.mean()), "e2e_p90_s": float(np.quantile(e2e, 0.9)),
        "e2e_mean_per_round_s": [statistics.fmean(v) for _, v in sorted(runs.items())],
        "queue_mean_s": statistics.fmean(r["queue_s"] for r in rows),
        "self_predicted": float(np.mean([r["predictor"].split(":")[0] == predictor.split(":")[0]
                                         and "fallback" not in r["predictor"] for r in rows])),
    }


def table(summaries: dict[str, dict[str, Any]]) -> str:
    lines = ["| arm | requests | cached share mean | p10 / p50 / p90 | none cached | all cached | mean E2E s "
             "(per round) | p90 E2E s | mean queue s | ordered by a self-prediction |", "|---" * 10 + "|"]
    for arm, s in summaries.items():
        per_round = ", ".join(f"{x:.1f}" for x in s["e2e_mean_per_round_s"])
        lines.append(f"| {arm} | {s['requests']} | {s['share_mean']:.2f} | "
                     f"{' / '.join(f'{q:.2f}' for q in s['share_p10_p50_p90'])} | {s['share_none']:.0%} | "
                     f"{s['share_full']:.0%} | {s['e2e_mean_s']:.1f} ({per_round}) | {s['e2e_p90_s']:.1f} | "
                     f"{s['queue_mean_s']:.1f} | {s['self_predicted']:.0%} |")
    return "\n".join(lines)


def print_run(rows: list[dict[str, Any]]) -> None:
    print(f"{'wait s':>8} {'e2e s':>7} {'prompt':>7} {'cached':>7} {'share':>6}  predictor")
    by_bucket: dict[str, list[float]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r["queue_s"]):
        print(f"{r['queue_s']:8.2f} {r['e2e_s']:7.2f} {r['prompt_tokens']:7d} {r['cached_tokens']:7d} "
              f"{r['share']:6.2f}  {r['predictor']}")
        by_bucket[wait_bucket(r["queue_s"])].append(r["share"])
    print("cached share by queue wait:")
    for bucket, shares in by_bucket.items():
        print(f"  {bucket:>7}: {statistics.fmean(shares):.2f} (n={len(shares)})")


async def measure(args: argparse.Namespace, windows: list[int], out: Path | None) -> list[dict[str, Any]]:
    """The rounds, arms interleaved; a round starts only if one as long as the last fits in `--budget`."""
    rows: list[dict[str, Any]] = []
    started, last = time.monotonic(), 0.0
    for round_ in range(args.rounds):
        if round_ and time.monotonic() - started + last > args.budget:
            print(f"stopping after {round_} round(s): another would pass --budget {args.budget:g} s")
            break
        round_started = time.monotonic()
        for window in windows if round_ % 2 == 0 else windows[::-1]:
            arm_started = time.monotonic()
            run = await run_arm(args, window, round_)
            print(f"round {round_ + 1}, {arm_name(window)}: {time.monotonic() - arm_started:.0f} s "
                  f"(queue mode, max-inflight {args.max_inflight}, predictor {args.predictor})", flush=True)
            print_run(run)
            rows += run
            if out is not None:
                with (out / "requests.jsonl").open("a") as f:
                    f.writelines(json.dumps(r) + "\n" for r in run)
        last = time.monotonic() - round_started
    return rows


async def main(args: argparse.Namespace) -> None:
    windows = [int(x) for x in args.windows.split(",")]
    out = Path(args.out) if args.out else None
    if args.report:
        assert out is not None, "--report reads --out/requests.jsonl"
        rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
        windows = sorted({r["window"] for r in rows})
    else:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        rows = await measure(args, windows, out)
    summaries = {arm_name(w): summary([r for r in rows if r["window"] == w], args.predictor) for w in windows}
    print(table(summaries))
    if out is not None:
        (out / "summary.json").write_text(json.dumps({"args": vars(args), "arms": summaries}, indent=1) + "\n")
        (out / "table.md").write_text(table(summaries) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-url", default="http://127.0.0.1:8100")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-inflight", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--words", default="300-450", help="prompt length range, in words (~1.3 tokens each)")
    parser.add_argument("--policy", default="sjf")
    parser.add_argument("--predictor", default="self")
    parser.add_argument("--windows", default="0", help="arms: 0 (query on arrival) and/or query windows W")
    parser.add_argument("--cheap-predictor", default="prompt-length")
    parser.add_argument("--prediction-timeout", type=float, default=300.0,
                        help="long, so that every query of the arrival arm runs (a timed-out one is aborted)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--block-size", type=int, default=128, help="the engine's KV block, in tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=math.inf, help="seconds; no round starts that would pass it")
    parser.add_argument("--out", help="directory for requests.jsonl, summary.json and table.md")
    parser.add_argument("--report", action="store_true", help="only summarize --out/requests.jsonl")
    asyncio.run(main(parser.parse_args()))
