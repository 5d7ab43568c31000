"""A running embedded engine's speed and memory: what a user choosing a model (`engine up --model`) needs to know.

Measures, on the engine lengthwise started on --port (run it on the other core than this client, e.g.
`engine up --omp-threads-bind 1` and `taskset -c 0` here):
  - output tokens/s of 1 and of --seats concurrent fixed-length answers (ignore_eos), each twice after a warm-up;
  - prefill tokens/s of one fresh prompt of about --prefill-words words (max_tokens 1, no cache hit);
  - the engine's memory: summed PSS (shared pages counted once) and summed RSS of its processes.

    taskset -c 0 .venv/bin/python benchmarks/engine_model_speed.py --port 8300 --seats 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import httpx
import psutil
from engine_cpu_layout import decode_speed

from lengthwise.engine import find
from lengthwise.engine.server import engine_processes

GIB = 2**30


def prefill_speed(url: str, model: str, words: int) -> float:
    """Prompt tokens/s of one prompt no earlier request shares a block with (a fresh prefix)."""
    prompt = f"{uuid.uuid4()} " + " ".join(f"word{i}" for i in range(words))
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    started = time.monotonic()
    response = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
    response.raise_for_status()
    return response.json()["usage"]["prompt_tokens"] / (time.monotonic() - started)


def memory_gib(processes: list[psutil.Process]) -> dict[str, float]:
    pss = rss = 0
    for proc in processes:
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        pss, rss = pss + info.pss, rss + info.rss
    return {"pss_gib": round(pss / GIB, 2), "rss_gib": round(rss / GIB, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--seats", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128, help="length of each fixed-length answer")
    parser.add_argument("--prefill-words", type=int, default=600)
    args = parser.parse_args()
    handle = find(args.port)
    if handle is None:
        raise SystemExit(f"no engine started by lengthwise on port {args.port}")
    asyncio.run(decode_speed(handle.url, handle.model, 2, 8))  # warm-up
    speeds = {
        f"output_tok_s_{n}_seats": [
            round(asyncio.run(decode_speed(handle.url, handle.model, n, args.tokens)), 1) for _ in range(2)
        ]
        for n in (1, args.seats)
    }
    print(json.dumps({
        "model": handle.model,
        "config": handle.config.describe(),
        "answer_tokens": args.tokens,
        **speeds,
        "prefill_tok_s": round(prefill_speed(handle.url, handle.model, args.prefill_words), 1),
        **memory_gib(engine_processes(handle)),
        "available_gib_after": round(psutil.virtual_memory().available / GIB, 2),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
