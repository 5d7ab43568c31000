"""Data for the learned predictor: labelled prompts, the proxy-labelled dev pool, cached embeddings.

Two kinds of labels:
- *actual*: the embedded model's own output tokens for a prompt, from `predict eval`
  JSONL (with the self-prediction variants) or `benchmarks/learned_collect.py`;
- *proxy*: the token count of ShareGPT's recorded answer (ChatGPT's), available for
  every dev record; it says which prompts ask for long answers, on another model's
  scale.
The proxy pool excludes every labelled prompt, so pretraining never sees a prompt
that is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.progress import Progress

from lengthwise.core.cache import cache_root
from lengthwise.core.io import read_jsonl
from lengthwise.predict.learned.embedding import PromptEmbedder, prompt_key
from lengthwise.predict.offline.report import variant_features
from lengthwise.core.tokens import count_tokens
from lengthwise.workload.sharegpt import Prompt, load_sharegpt


@dataclass(frozen=True)
class Labelled:
    """A dev prompt with the embedded model's actual output length."""

    id: str
    text: str
    actual: int
    max_tokens: int
    #: Self-prediction features per postfix variant (None: that query fell back).
    variants: Mapping[str, Mapping[str, float] | None] = field(default_factory=dict)
    #: Tokens of ShareGPT's recorded answer: the proxy label (never a serving-time feature).
    reference_tokens: int = 0
    #: Cut at max_tokens (finish_reason "length"): the answer is at least `actual` long.
    capped: bool = False
    #: Position among the ShareGPT records (-1: unknown).
    index: int = -1

    @property
    def prompt_tokens(self) -> int:
        return count_tokens(self.text)


def load_labelled(paths: Iterable[Path], prompts: Mapping[str, Prompt] | None = None) -> list[Labelled]:
    """Labelled prompts from eval / collect JSONLs (first occurrence of an id wins)."""
    by_id = prompts if prompts is not None else {p.id: p for p in load_sharegpt("dev")}
    seen: dict[str, Labelled] = {}
    for path in paths:
        for record in read_jsonl(path):
            prompt = by_id.get(record.get("id", ""))
            actual = record.get("actual_tokens", record.get("actual"))
            if prompt is None or prompt.id in seen or not isinstance(actual, int) or actual <= 0:
                continue
            variants = {name: variant_features(record, name) for name in record.get("variants") or {}}
            max_tokens = int(record.get("max_tokens", 512))
            reference = count_tokens(prompt.reference)
            finish = record.get("finish_reason")
            capped = finish == "length" if finish else actual >= max_tokens
            seen[prompt.id] = Labelled(
                prompt.id, prompt.text, actual, max_tokens, variants, reference, capped, prompt.index
            )
    return list(seen.values())


def proxy_pool(exclude: Iterable[str], limit: int | None = None) -> list[Prompt]:
    """Dev prompts with a recorded answer, minus the excluded (labelled) ids."""
    excluded = set(exclude)
    pool = [p for p in load_sharegpt("dev") if p.id not in excluded and p.reference.strip()]
    return pool[:limit] if limit is not None else pool


def embed_all(embedder: PromptEmbedder, texts: Sequence[str], cache: Path | None = None) -> np.ndarray:
    """Embeddings of `texts` (on-disk cache by prompt hash, extended), also put in `embedder`'s memory cache."""
    known: dict[str, np.ndarray] = {}
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            known = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    keys = [prompt_key(t) for t in texts]
    missing = [i for i, key in enumerate(keys) if key not in known]
    if missing:
        with Progress(transient=True) as progress:
            task = progress.add_task("embedding prompts", total=len(missing))
            for i in missing:
                known[keys[i]] = embedder.embed(texts[i])
                progress.advance(task)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    for text, key in zip(texts, keys, strict=True):
        embedder.remember(text, known[key])
    return np.stack([known[k] for k in keys]) if keys else np.zeros((0, embedder.dimension), np.float32)


def embedding_cache(embedder: PromptEmbedder) -> Path:
    """Where `embed_all` keeps the dev pool's embeddings: under the cache root (LENGTHWISE_CACHE)."""
    return cache_root() / "learned" / f"minilm-int8-{embedder.max_length}.npz"
