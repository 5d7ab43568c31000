"""Collect the embedded model's actual output lengths for ShareGPT dev prompts (resumable).

Labels for the learned predictor's held-out evaluation, beyond the prediction
engineer's eval JSONL. Prompts come from the *tail* of the dev split (index
>= --start-index) so they don't overlap the eval and benchmark prompts, which are
drawn from its head. Each line: {"id", "index", "prompt", "prompt_tokens",
"actual", "finish_reason", "reference_tokens"}. Requests are sent at a low
urgency (priority 10) and at most --concurrency at a time, since the engine is
shared.

    python benchmarks/learned_collect.py --url http://127.0.0.1:8100 -n 300
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import httpx
from rich.progress import Progress

from lengthwise.core.io import append_jsonl
from lengthwise.core.tokens import count_tokens
from lengthwise.predict.offline.eval import done_ids
from lengthwise.workload.sharegpt import load_sharegpt

OUT = Path(__file__).resolve().parents[1] / "docs/results/learned/actuals.jsonl"


async def answer(client: httpx.AsyncClient, model: str, text: str, max_tokens: int) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "temperature": 0.0,
        "max_tokens": max_tokens,
        "priority": 10,
    }
    response = await client.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return response.json()


async def main(args: argparse.Namespace) -> None:
    pool = [p for p in load_sharegpt("dev", max_prompt_tokens=args.max_prompt_tokens) if p.index >= args.start_index]
    skip = done_ids(args.out)
    todo = [p for p in pool if p.id not in skip][: max(0, args.n - len(skip))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    limit = asyncio.Semaphore(args.concurrency)
    async with httpx.AsyncClient(base_url=args.url, timeout=600) as client:
        with Progress() as progress:
            task = progress.add_task("answers", total=len(todo))

            async def one(prompt) -> None:
                async with limit:
                    try:
                        data = await answer(client, args.model, prompt.text, args.max_tokens)
                    except httpx.HTTPError as exc:
                        progress.console.print(f"[red]{prompt.id}: {exc!r}")
                        return
                usage = data["usage"]
                record = {
                    "id": prompt.id,
                    "index": prompt.index,
                    "prompt": prompt.text,
                    "prompt_tokens": usage["prompt_tokens"],
                    "actual": usage["completion_tokens"],
                    "finish_reason": data["choices"][0]["finish_reason"],
                    "reference_tokens": count_tokens(prompt.reference),
                    "max_tokens": args.max_tokens,
                }
                append_jsonl(args.out, record)
                progress.advance(task)

            await asyncio.gather(*(one(p) for p in todo))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8100")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("-n", type=int, default=300, help="total records wanted in the output")
    parser.add_argument("--start-index", type=int, default=10_000)
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    asyncio.run(main(parser.parse_args()))
