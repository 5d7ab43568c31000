"""Latency the learned predictor adds per request, on this CPU (prints p50/p90/p99 in ms).

Real ShareGPT prompts never seen before (so the embedding cache misses), through
`LearnedPredictor.predict` with the shipped pretrained model and an online model fit
on synthetic labels. The wrapped predictor is a stand-in that answers after
`--inner-ms` (0: the features' own cost; ~500: the self-prediction query measured
on the embedded engine, which the features overlap). Reported: the time beyond the
wrapped predictor, with and without the MiniLM embedding.

    python benchmarks/learned_latency.py -n 200 --inner-ms 0 --inner-ms 500
    python benchmarks/learned_latency.py -n 500 --inner-ms 0 --stage PATH   # another pretrained stage
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import numpy as np

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.offline.learned_eval import dense_rows
from lengthwise.predict.learned.pretrained import SHIPPED, Pretrained
from lengthwise.predict.learned.rank_stage import Stage, load_stage
from lengthwise.core.tokens import count_tokens
from lengthwise.workload.sharegpt import load_sharegpt


class SleepySelf(Predictor):
    """Answers like a self-predictor after a fixed delay."""

    name = "self"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def predict(self, request: LengthRequest) -> Prediction:
        await asyncio.sleep(self.delay_s)
        return Prediction(10.0, "self", raw=10.0, features={"expect": 40.0, "entropy": 1.2, "mass": 0.9})

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        pass


def chat(text: str, i: int) -> LengthRequest:
    return LengthRequest("chat", {"messages": [{"role": "user", "content": text}], "max_tokens": 512}, f"b{i}")


async def run(texts: list[str], embedding: bool, inner_ms: float, pretrained: Stage | None) -> np.ndarray:
    embedder = PromptEmbedder() if embedding else None
    predictor = LearnedPredictor(SleepySelf(inner_ms / 1000), embedder=embedder, pretrained=pretrained,
                                 min_observations=20, retrain_every=20)
    warm = texts[:40]  # load the model, then learn an online model from synthetic labels
    for i, text in enumerate(warm):
        request = chat(text, i)
        predictor.observe(request, await predictor.predict(request), 50 + len(text) % 400)
    predictor.wait_idle()
    added = []
    for i, text in enumerate(texts[40:], start=40):
        start = time.perf_counter()
        prediction = await predictor.predict(chat(text, i))
        added.append(time.perf_counter() - start - inner_ms / 1000)
        assert prediction.source == "learned:online", prediction
    predictor.close()
    return np.array(added) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="timed prompts")
    parser.add_argument("--inner-ms", type=float, action="append", help="wrapped predictor's delay (repeatable)")
    parser.add_argument("--stage", type=Path, default=SHIPPED, help="pretrained stage with the embedding (.npz)")
    args = parser.parse_args()
    prompts = [p.text for p in load_sharegpt("test", limit=args.n + 40)]
    pool = [p for p in load_sharegpt("dev", limit=3000) if p.reference.strip()]
    texts = [p.text for p in pool]
    pretrained = {
        True: load_stage(args.stage),
        False: Pretrained.fit(texts, dense_rows(texts, None), [count_tokens(p.reference) for p in pool]),
    }
    print(f"{args.n} prompts (ShareGPT test split, unseen); pretrained: {args.stage} / TF-IDF only on 3,000 dev")
    for inner_ms in args.inner_ms or [0.0]:
        for embedding in (True, False):
            ms = asyncio.run(run(prompts, embedding, inner_ms, pretrained[embedding]))
            label = "MiniLM + TF-IDF" if embedding else "TF-IDF, no embedding"
            print(f"inner {inner_ms:5.0f} ms | {label:28s} | added p50 {np.median(ms):6.2f} ms  "
                  f"p90 {np.percentile(ms, 90):6.2f} ms  p99 {np.percentile(ms, 99):6.2f} ms  max {ms.max():6.1f} ms")


if __name__ == "__main__":
    main()
