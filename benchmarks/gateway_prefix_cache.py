"""Does a request still find its prompt in the engine's prefix cache after waiting in the gateway's queue?

The self-prediction query warms the engine's prefix cache with the prompt; in queue mode
the real request may wait long enough for the engine to evict it (the seed's extra
constraint). This sends `--requests` distinct long prompts at once through the gateway
in queue mode (self-prediction, `--max-inflight` per backend), so that later requests
wait longer, and prints each request's queue wait against the share of its prompt tokens
the engine served from cache, then the share by wait bucket.

    python benchmarks/gateway_prefix_cache.py [--engine-url http://127.0.0.1:8100] [--requests 12]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections import defaultdict

import httpx

from lengthwise.core.headers import PREDICTOR, QUEUE_MS
from lengthwise.core.usage import cached_tokens
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.metrics import wait_bucket
from lengthwise.testing.gateway import running_gateway

TOPICS = ("hash maps", "B-trees", "TCP congestion control", "garbage collection", "consensus protocols",
          "bloom filters", "virtual memory", "database indexes", "JIT compilers", "rate limiters",
          "CRDTs", "load balancers", "regular expressions", "file systems", "SIMD", "schedulers")


def prompt(i: int, repeat: int) -> str:
    """A distinct prompt of roughly `repeat` × 14 tokens (a fresh id up front: nothing cached before)."""
    topic = TOPICS[i % len(TOPICS)]
    return f"[{uuid.uuid4()}] " + f"Explain {topic} to a new engineer, with one concrete example. " * repeat


async def main(args: argparse.Namespace) -> None:
    config = GatewayConfig(backends=(args.engine_url,), mode="queue", policy=args.policy, predictor=args.predictor,
                           max_inflight=args.max_inflight)
    async with running_gateway(config) as (gateway, url), httpx.AsyncClient(timeout=1800) as client:
        models = (await client.get(url + "/v1/models")).json()["data"]

        async def one(i: int) -> tuple[float, int, int, str]:
            body = {"model": models[0]["id"], "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True,
                    "messages": [{"role": "user", "content": prompt(i, args.repeat)}]}
            r = await client.post(url + "/v1/chat/completions", json=body)
            r.raise_for_status()
            usage = r.json()["usage"]
            cached = cached_tokens(usage) or 0
            return float(r.headers[QUEUE_MS]) / 1e3, usage["prompt_tokens"], cached, r.headers[PREDICTOR]

        rows = sorted(await asyncio.gather(*(one(i) for i in range(args.requests))))
    print(f"queue mode, max-inflight {args.max_inflight}, predictor {args.predictor}, {args.requests} requests")
    print(f"{'wait s':>8} {'prompt':>7} {'cached':>7} {'share':>6}  predictor")
    by_bucket: dict[str, list[float]] = defaultdict(list)
    for wait, prompt_tokens, cached, source in rows:
        print(f"{wait:8.2f} {prompt_tokens:7d} {cached:7d} {cached / prompt_tokens:6.2f}  {source}")
        by_bucket[wait_bucket(wait)].append(cached / prompt_tokens)
    print("cached share by queue wait:")
    for bucket, shares in by_bucket.items():
        print(f"  {bucket:>7}: {statistics.fmean(shares):.2f} (n={len(shares)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine-url", default="http://127.0.0.1:8100")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--max-inflight", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=40, help="prompt length, in sentences of ~14 tokens")
    parser.add_argument("--policy", default="sjf")
    parser.add_argument("--predictor", default="self")
    asyncio.run(main(parser.parse_args()))
