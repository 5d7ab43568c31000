"""The query→request prefix-eviction window on a running engine: cached share against wait and KV written.

Start the engine under KV pressure first (a small cache, e.g.
`lengthwise engine up --port 8200 --kv-cache 48M --max-model-len 2048`), leave it otherwise idle, then
`.venv/bin/python benchmarks/eviction_window.py --url http://127.0.0.1:8200 --out docs/results/eviction`.
Each trial (see `lengthwise.bench.eviction`): a query (prompt + postfix, one token), filler
requests of `--filler-words` words each, `--fillers` words in all, for at least `--waits` seconds,
then the real request, whose cached prompt tokens are read from its usage. `--merge` adds earlier
runs' trials (without `--url`, it only reports them). Writes eviction.json (every trial, logistic
survival fits per filler size and overall, the engine's KV capacity) and eviction_survival.png.
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
    SurvivalFit, Trial, cache_capacity_tokens, eviction_png, fit_survival, measure_trial, plan_trials,
)  # fmt: skip


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


async def _measure(args: argparse.Namespace) -> tuple[list[Trial], int | None]:
    async with httpx.AsyncClient(timeout=args.timeout) as client:
        model = args.model or (await client.get(f"{args.url}/v1/models")).json()["data"][0]["id"]
        capacity = cache_capacity_tokens((await client.get(f"{args.url}/metrics")).text)
        trials = plan_trials(_floats(args.waits), [int(x) for x in _floats(args.fillers)], args.repeats, args.seed)
        print(f"model {model}; KV capacity {capacity} tokens; {len(trials)} trials", flush=True)
        with Progress() as bar:
            task = bar.add_task("trials", total=len(trials))
            for n, trial in enumerate(trials):
                await measure_trial(
                    client, args.url, model, trial, tag=f"evict-{args.seed}-{n}", prompt_words=args.prompt_words,
                    filler_prompt_words=args.filler_words, filler_concurrency=args.filler_concurrency,
                    block_size=args.block_size,
                )  # fmt: skip
                bar.console.print(
                    f"wait {trial.wait_s:4.1f}s filler {trial.filler_words:5d}: elapsed {trial.elapsed_s:5.1f}s, "
                    f"written {trial.written_tokens:5d}, cached {trial.cached_tokens}/{trial.cacheable_tokens} "
                    f"({trial.share:.0%}); query cached {trial.query_cached_tokens}"
                )
                bar.advance(task)
    return trials, capacity


def _load(path: Path) -> tuple[list[Trial], int | None]:
    """An earlier run's trials (each filler prompt's size from its settings where the trial lacks it)."""
    data = json.loads(path.read_text())
    trials = [Trial.from_dict(t) for t in data["trials"]]
    for t in trials:
        t.filler_prompt_words = t.filler_prompt_words or int(data["settings"]["filler_words"])
    return trials, data.get("kv_capacity_tokens")


def _report(args: argparse.Namespace, trials: list[Trial], capacity: int | None) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    groups = {f"fillers of {size} words": [t for t in trials if t.filler_prompt_words == size]
              for size in sorted({t.filler_prompt_words for t in trials}, reverse=True)}  # fmt: skip
    fits: dict[str, SurvivalFit] = {}
    for name, group in {**groups, "all trials": trials}.items():
        try:
            fits[name] = fit_survival([t.written_tokens for t in group], [t.share for t in group])
        except (ValueError, RuntimeError) as exc:  # too few trials, or the curve did not converge
            print(f"{name}: no survival fit: {exc}")
    print("\n| filler prompt words | wait ≥ s | filler words | trials | mean elapsed s | mean KV written | mean cached share |")
    print("|---|---|---|---|---|---|---|")
    cells = sorted({(t.filler_prompt_words, t.wait_s, t.filler_words) for t in trials}, key=lambda c: (-c[0], c[1], c[2]))
    for size, wait, filler in cells:
        pts = [t for t in trials if (t.filler_prompt_words, t.wait_s, t.filler_words) == (size, wait, filler)]
        print(f"| {size} | {wait:g} | {filler} | {len(pts)} | {np.mean([t.elapsed_s for t in pts]):.1f} | "
              f"{np.mean([t.written_tokens for t in pts]):,.0f} | {np.nanmean([t.share for t in pts]):.2f} |")  # fmt: skip
    busy = [t for t in trials if t.written_tokens > 0]
    rate = sum(t.written_tokens for t in busy) / sum(t.elapsed_s for t in busy) if busy else None
    print()
    for name, fit in fits.items():
        print(f"{name}: share = 1 / (1 + exp((written - {fit.w50:,.0f}) / {fit.scale:,.0f})), rmse {fit.rmse:.3f}, "
              f"{fit.n} trials" + (f"; half the prefix gone after {fit.w50 / rate:.1f} s at {rate:,.0f} tokens/s" if rate else ""))  # fmt: skip
    print(f"KV capacity {capacity} tokens")
    summary = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "settings": {k: [str(p) for p in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v
                     for k, v in vars(args).items()},  # fmt: skip
        "kv_capacity_tokens": capacity,
        "filler_write_rate_tokens_per_s": rate,
        "fits": {name: fit.__dict__ for name, fit in fits.items()},
        "trials": [t.as_dict() for t in trials],
    }
    (args.out / "eviction.json").write_text(json.dumps(summary, indent=1))
    title = f"prefix survival, {len(trials)} trials, prompt ~{args.prompt_words} words, KV capacity {capacity} tokens"
    png = eviction_png(groups, {k: v for k, v in fits.items() if k in groups}, capacity,
                       args.out / "eviction_survival.png", title)  # fmt: skip
    print(f"wrote {args.out / 'eviction.json'} and {png}")


def _run(args: argparse.Namespace) -> None:
    trials, capacity = asyncio.run(_measure(args)) if args.url else ([], None)
    for path in args.merge:
        earlier, earlier_capacity = _load(path)
        trials, capacity = earlier + trials, capacity or earlier_capacity
    if not trials:
        raise SystemExit("nothing to report: give --url to measure, or --merge earlier runs")
    _report(args, trials, capacity)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="the engine's root URL, e.g. http://127.0.0.1:8200; "
                    "without it, only report the --merge runs")
    ap.add_argument("--model", default=None, help="default: the server's first model")
    ap.add_argument("--waits", default="0,10", help="seconds between query and request, at least (comma-separated)")
    ap.add_argument("--fillers", default="0,1000,2000,3000,4000,6000",
                    help="filler prompt words sent in between (about 1.3 tokens each; the trial records the tokens)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--prompt-words", type=int, default=400, help="the measured prompt's length (words)")
    ap.add_argument("--filler-words", type=int, default=500, help="each filler prompt's length (words)")
    ap.add_argument("--filler-concurrency", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=128, help="the engine's KV block size (vLLM CPU: 128)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", type=Path, default=Path("docs/results/eviction"))
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="an earlier eviction.json whose trials join the table, fits and plot (repeatable)")
    _run(ap.parse_args())


if __name__ == "__main__":
    main()
