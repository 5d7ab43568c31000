"""The query→request prefix-eviction window on a running engine: cached share against wait and KV written.

Start the engine under KV pressure first (a small cache, e.g.
`lengthwise engine up --port 8200 --kv-cache 48M --max-model-len 2048`), leave it otherwise idle, then
`.venv/bin/python benchmarks/eviction_window.py --url http://127.0.0.1:8200 --out docs/results/eviction`.
Each trial (see `lengthwise.bench.eviction`): a query (prompt + postfix, one token), filler
requests writing `filler` KV tokens for at least `wait` seconds, then the real request, whose
cached prompt tokens are read from its usage. Writes eviction.json (every trial, the
logistic survival fit, the engine's KV capacity) and eviction_survival.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

import httpx
import numpy as np
from rich.progress import Progress

from lengthwise.bench.eviction import (
    Trial, cache_capacity_tokens, eviction_png, fit_survival, measure_trial, plan_trials,
)  # fmt: skip


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


async def _run(args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(timeout=args.timeout) as client:
        model = args.model or (await client.get(f"{args.url}/v1/models")).json()["data"][0]["id"]
        capacity = cache_capacity_tokens((await client.get(f"{args.url}/metrics")).text)
        trials = plan_trials(_floats(args.waits), [int(x) for x in _floats(args.fillers)], args.repeats, args.seed)
        print(f"model {model}; KV capacity {capacity} tokens; {len(trials)} trials", flush=True)
        done = []
        with Progress() as bar:
            task = bar.add_task("trials", total=len(trials))
            for n, trial in enumerate(trials):
                await measure_trial(
                    client, args.url, model, trial, tag=f"evict-{args.seed}-{n}", prompt_words=args.prompt_words,
                    filler_words=args.filler_words, filler_concurrency=args.filler_concurrency,
                    block_size=args.block_size,
                )  # fmt: skip
                done.append(trial)
                bar.console.print(
                    f"wait {trial.wait_s:4.1f}s filler {trial.filler_words:5d}: elapsed {trial.elapsed_s:5.1f}s, "
                    f"written {trial.written_tokens:5d}, cached {trial.cached_tokens}/{trial.cacheable_tokens} "
                    f"({trial.share:.0%}); query cached {trial.query_cached_tokens}"
                )
                bar.advance(task)
    if args.merge is not None:
        done = [Trial.from_dict(t) for t in json.loads(args.merge.read_text())["trials"]] + done
    _report(args, done, capacity)


def _report(args: argparse.Namespace, trials: list, capacity: int | None) -> None:  # noqa: ANN001
    args.out.mkdir(parents=True, exist_ok=True)
    fit = None
    try:
        fit = fit_survival([t.written_tokens for t in trials], [t.share for t in trials])
    except (ValueError, RuntimeError) as exc:  # too few trials, or the curve did not converge
        print(f"no survival fit: {exc}")
    print("\n| wait ≥ s | filler words | trials | mean elapsed s | mean KV written | mean cached share |")
    print("|---|---|---|---|---|---|")
    for wait in sorted({t.wait_s for t in trials}):
        for filler in sorted({t.filler_words for t in trials}):
            pts = [t for t in trials if t.wait_s == wait and t.filler_words == filler]
            print(f"| {wait:g} | {filler} | {len(pts)} | {np.mean([t.elapsed_s for t in pts]):.1f} | "
                  f"{np.mean([t.written_tokens for t in pts]):,.0f} | {np.nanmean([t.share for t in pts]):.2f} |")  # fmt: skip
    busy = [t for t in trials if t.written_tokens > 0]
    rate = sum(t.written_tokens for t in busy) / sum(t.elapsed_s for t in busy) if busy else None
    summary = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "kv_capacity_tokens": capacity,
        "filler_write_rate_tokens_per_s": rate,
        "fit": None if fit is None else fit.__dict__,
        "trials": [t.as_dict() for t in trials],
    }
    if fit is not None:
        print(f"\nfit: share = 1 / (1 + exp((written - {fit.w50:,.0f}) / {fit.scale:,.0f})), rmse {fit.rmse:.3f}, "
              f"{fit.n} trials; KV capacity {capacity} tokens")  # fmt: skip
        if rate:
            print(f"at the fillers' write rate ({rate:,.0f} tokens/s) half the prefix is gone after {fit.w50 / rate:.1f} s")
    (args.out / "eviction.json").write_text(json.dumps(summary, indent=1))
    title = f"prefix survival, {len(trials)} trials, prompt ~{args.prompt_words} words, KV capacity {capacity} tokens"
    print(f"wrote {args.out / 'eviction.json'} and {eviction_png(trials, fit, capacity, args.out / 'eviction_survival.png', title)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the engine's root URL, e.g. http://127.0.0.1:8200")
    ap.add_argument("--model", default=None, help="default: the server's first model")
    ap.add_argument("--waits", default="0,10", help="seconds between query and request, at least (comma-separated)")
    ap.add_argument("--fillers", default="0,1000,2000,3000,4000,6000",
                    help="filler prompt words sent in between (about 1.3 tokens each; the trial records the tokens)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--prompt-words", type=int, default=400, help="the measured prompt's length (about tokens)")
    ap.add_argument("--filler-words", type=int, default=500, help="each filler prompt's length (about tokens)")
    ap.add_argument("--filler-concurrency", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=128, help="the engine's KV block size (vLLM CPU: 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=Path("docs/results/eviction"))
    ap.add_argument("--merge", type=Path, default=None, help="an earlier eviction.json whose trials join the fit and plot")
    asyncio.run(_run(ap.parse_args()))


if __name__ == "__main__":
    main()
