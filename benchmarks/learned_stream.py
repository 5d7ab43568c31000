"""Online learning at scale, on proxy labels: does the online stage keep improving with traffic?

The embedded model's own lengths are too costly to collect by the thousand on this
CPU, so this stream uses ShareGPT's recorded answer lengths (clipped to 512) as the
"actual" lengths of a deployment's traffic. Disjoint dev slices:
pretrain on records [2000, 6000), stream [6000, 10000) through `predict`/`observe`
as a gateway would, test on [10000, 12000) (texts seen earlier removed). Printed: the
held-out Kendall tau after n completions, against the LTR baseline (ListMLE) fit
offline on the pretraining slice and a pretrained model fit offline on both slices.

    python benchmarks/learned_stream.py [--no-embedding]
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import numpy as np

from lengthwise.predict.base import LengthRequest
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.learned.predictor import LearnedPredictor
from lengthwise.predict.offline.learned_data import embed_all, embedding_cache
from lengthwise.predict.offline.learned_eval import dense_rows
from lengthwise.predict.learned.pretrained import Pretrained
from lengthwise.predict.offline.ranker import ListMLERanker
from lengthwise.core.stats import kendall_tau
from lengthwise.core.tokens import count_tokens
from lengthwise.workload.sharegpt import load_sharegpt

OUT = Path(__file__).resolve().parents[1] / "docs/results/learned"
CHECKPOINTS = (0, 100, 250, 500, 1000, 2000, 4000)


def chat(text: str, i: int) -> LengthRequest:
    return LengthRequest("chat", {"messages": [{"role": "user", "content": text}], "max_tokens": 512}, f"s{i}")


async def stream(predictor: LearnedPredictor, train, test_texts, test_y) -> dict[int, float]:
    curve = {}

    async def tau() -> float:
        predicted = [(await predictor.predict(chat(t, -1))).tokens for t in test_texts]
        return kendall_tau(predicted, test_y)

    for n, (text, length) in enumerate(train):
        if n in CHECKPOINTS:
            predictor.wait_idle()
            curve[n] = await tau()
            print(f"  after {n:5d} completions: held-out tau {curve[n]:.3f}", flush=True)
        request = chat(text, n)
        predictor.observe(request, await predictor.predict(request), length)
    predictor.wait_idle()
    curve[len(train)] = await tau()
    print(f"  after {len(train):5d} completions: held-out tau {curve[len(train)]:.3f}")
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--retrain-every", type=int, default=100)
    args = parser.parse_args()
    dev = [p for p in load_sharegpt("dev") if p.reference.strip()]
    pre = [p for p in dev if 2000 <= p.index < 6000]
    flow = [p for p in dev if 6000 <= p.index < 10000]
    seen = {p.text.strip() for p in pre + flow}
    test = [p for p in dev if p.index >= 10000 and p.text.strip() not in seen]
    embedder = PromptEmbedder(cache_size=50_000) if args.embedding else None

    def dense(prompts) -> np.ndarray:
        texts = [p.text for p in prompts]
        return dense_rows(texts, embed_all(embedder, texts, embedding_cache(embedder)) if embedder else None)

    def lengths(prompts) -> np.ndarray:
        return np.minimum([count_tokens(p.reference) for p in prompts], 512).astype(float)

    test_y = lengths(test)
    pretrained = Pretrained.fit([p.text for p in pre], dense(pre), lengths(pre))
    both = pre + flow
    offline_all = Pretrained.fit([p.text for p in both], dense(both), lengths(both))
    ranker = ListMLERanker.fit(dense(pre), lengths(pre), lists=3000)
    test_dense = dense(test)
    reference = {
        "LTR baseline (ListMLE, offline on the pretraining slice)": ranker.score(test_dense),
        "pretrained, offline on pretraining + stream slices": offline_all.score([p.text for p in test], test_dense),
    }
    print(f"pretrain {len(pre)}, stream {len(flow)}, test {len(test)}; embedding: {args.embedding}")
    for name, scores in reference.items():
        print(f"{name}: tau {kendall_tau(scores, test_y):.3f}")
    predictor = LearnedPredictor(None, embedder=embedder, pretrained=pretrained, retrain_every=args.retrain_every)
    curve = asyncio.run(stream(predictor, [(p.text, int(y)) for p, y in zip(flow, lengths(flow), strict=True)],
                               [p.text for p in test], test_y))
    predictor.close()
    result = {
        "embedding": args.embedding, "sizes": [len(pre), len(flow), len(test)],
        "reference": {k: kendall_tau(v, test_y) for k, v in reference.items()},
        "curve": curve,
    }
    name = "stream.json" if args.embedding else "stream_no_embedding.json"
    (OUT / name).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
