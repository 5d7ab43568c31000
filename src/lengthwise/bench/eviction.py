"""How long a prediction query's prefix survives in a real engine's prefix cache under KV pressure.

The seed sends the real request "a short enough time" after its query that the
query's prefix is still cached. vLLM frees a finished request's blocks to the
tail of its free queue and allocates from the head, so the prefix is lost as
other requests write KV, not as time passes: what matters is the KV tokens
written in between, against the cache's free capacity. A trial measures it:

1. the query: a unique prompt P + postfix, one token (its blocks are now cached);
2. filler traffic: unique prompts of `filler_prompt_words` words each, `filler_words` words in all
   (about 1.3 tokens a word), a few at a time,
   for at least `wait_s` seconds (they write KV, pushing P's blocks to the head);
3. the real request: P alone, one token; its `usage.prompt_tokens_details.cached_tokens`
   over P's cacheable tokens (full blocks, one token always computed) is the share that survived.

`fit_survival` fits share = 1 / (1 + exp((written − w50) / scale)) to the trials.
Engine-free parts (prompts, shares, the fit, the plot) are unit-tested; `measure_trial`
needs a running engine (`benchmarks/eviction_window.py`).
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from lengthwise.core.usage import cached_tokens

#: The seed's question, after the prompt (its exact wording does not matter here: only P's blocks are measured).
POSTFIX = "\n\nBefore answering: how many tokens will your answer to the above take? Reply with a number only."
_WORDS = (
    "river stone copper lantern meadow orbit canvas thunder willow harbor pepper saddle quartz violet ember "
    "falcon glacier marble nectar oyster pillow ribbon summit tulip velvet walnut yonder zephyr anchor basket"
).split()


def unique_prompt(tag: str, words: int, seed: int) -> str:
    """About `words` tokens of text that shares no prefix block with any other tag (the tag comes first)."""
    rng = random.Random(f"{tag}:{seed}")
    return f"[{tag}] " + " ".join(rng.choice(_WORDS) for _ in range(words))


def cacheable_tokens(prompt_tokens: int, block_size: int) -> int:
    """Prompt tokens a prefix cache can serve: whole blocks, leaving at least one token to compute."""
    return max(prompt_tokens - 1, 0) // block_size * block_size


@dataclass
class Trial:
    """One query → filler → request measurement (planned values, then what happened)."""

    wait_s: float
    #: Filler words planned in all (sent as whole filler prompts); `written_tokens` is what they wrote.
    filler_words: int
    repeat: int
    #: Words in each filler prompt: larger fillers hold more KV while they run.
    filler_prompt_words: int = 0
    elapsed_s: float = 0.0
    written_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    cacheable_tokens: int = 0
    query_cached_tokens: int = 0

    @property
    def share(self) -> float:
        return self.cached_tokens / self.cacheable_tokens if self.cacheable_tokens else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "share": self.share}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        """A trial as `as_dict` wrote it (the derived share is dropped)."""
        return cls(**{k: v for k, v in data.items() if k != "share"})


def plan_trials(waits: Sequence[float], fillers: Sequence[int], repeats: int, seed: int) -> list[Trial]:
    """Every (wait, filler volume) `repeats` times, shuffled so drift does not line up with a setting."""
    if not waits or not fillers or repeats < 1:
        raise ValueError("need at least one wait, one filler volume and one repeat")
    if min(waits) < 0 or min(fillers) < 0:
        raise ValueError(f"waits and filler volumes must be >= 0, got {list(waits)} and {list(fillers)}")
    trials = [Trial(float(w), int(f), r) for r in range(repeats) for w in waits for f in fillers]
    random.Random(seed).shuffle(trials)
    return trials


def _survival(written: np.ndarray, w50: float, scale: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip((written - w50) / scale, -60, 60)))


@dataclass(frozen=True)
class SurvivalFit:
    """share(written) = 1 / (1 + exp((written − w50) / scale)); w50 tokens written halve the share."""

    w50: float
    scale: float
    rmse: float
    n: int

    def share(self, written: np.ndarray | float) -> np.ndarray:
        return _survival(np.asarray(written, dtype=float), self.w50, self.scale)


def fit_survival(written: Sequence[float], share: Sequence[float]) -> SurvivalFit:
    """Least-squares logistic fit of the surviving share against the KV tokens written since the query."""
    from scipy.optimize import curve_fit

    x, y = np.asarray(written, dtype=float), np.asarray(share, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3:
        raise ValueError(f"need at least 3 trials with a cacheable prompt to fit, got {x.size}")
    span = max(float(x.max()), 1.0)
    guess = float(np.median(x[y < 0.5])) if np.any(y < 0.5) else span
    (w50, scale), _ = curve_fit(_survival, x, y, p0=(guess, span / 10), bounds=([0.0, 1.0], [np.inf, np.inf]))
    rmse = float(np.sqrt(np.mean((_survival(x, w50, scale) - y) ** 2)))
    return SurvivalFit(float(w50), float(scale), rmse, int(x.size))


def cache_capacity_tokens(metrics_text: str) -> int | None:
    """KV capacity in tokens from vLLM's `/metrics` (`cache_config_info`: num_gpu_blocks × block_size)."""
    blocks = re.search(r'num_gpu_blocks="(\d+)"', metrics_text)
    size = re.search(r'block_size="(\d+)"', metrics_text)
    return int(blocks.group(1)) * int(size.group(1)) if blocks and size else None


async def _complete(client: httpx.AsyncClient, url: str, model: str, prompt: str) -> dict[str, Any]:
    """One token for `prompt` (completions, greedy); the response's usage."""
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0}
    response = await client.post(f"{url}/v1/completions", json=body)
    response.raise_for_status()
    usage = response.json().get("usage") or {}
    if cached_tokens(usage) is None:
        raise RuntimeError("the engine reports no cached tokens: start vLLM with --enable-prompt-tokens-details")
    return usage


async def measure_trial(
    client: httpx.AsyncClient, url: str, model: str, trial: Trial, *, tag: str, prompt_words: int,
    filler_prompt_words: int, filler_concurrency: int, block_size: int,
) -> Trial:  # fmt: skip
    """Run one trial against the engine at `url` (which must be otherwise idle) and fill in its results."""
    prompt = unique_prompt(tag, prompt_words, trial.repeat)
    trial.filler_prompt_words = filler_prompt_words
    query = await _complete(client, url, model, prompt + POSTFIX)
    trial.query_cached_tokens = cached_tokens(query) or 0
    started = time.monotonic()
    written, sent = 0, 0
    lock = asyncio.Lock()

    async def filler(worker: int) -> None:
        nonlocal written, sent
        while True:
            async with lock:
                if sent >= trial.filler_words:
                    return
                sent += filler_prompt_words
                n = sent
            usage = await _complete(client, url, model, unique_prompt(f"{tag}-f{worker}-{n}", filler_prompt_words, 0))
            written += int(usage.get("prompt_tokens", 0)) + 1

    await asyncio.gather(*(filler(k) for k in range(filler_concurrency)))
    await asyncio.sleep(max(trial.wait_s - (time.monotonic() - started), 0.0))
    trial.elapsed_s, trial.written_tokens = time.monotonic() - started, written
    real = await _complete(client, url, model, prompt)
    trial.prompt_tokens = int(real.get("prompt_tokens", 0))
    trial.cached_tokens = cached_tokens(real) or 0
    trial.cacheable_tokens = cacheable_tokens(trial.prompt_tokens, block_size)
    return trial


def eviction_png(
    groups: Mapping[str, Sequence[Trial]], fits: Mapping[str, SurvivalFit], capacity: int | None, out: Path, title: str
) -> Path:
    """Surviving share against KV tokens written since the query: one colour per group, its fit as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    top = max([t.written_tokens for trials in groups.values() for t in trials] + [1])
    xs = np.linspace(0, top * 1.05, 400)
    for k, (name, trials) in enumerate(groups.items()):
        color = f"C{k}"
        ax.scatter([t.written_tokens for t in trials], [t.share for t in trials], color=color, alpha=0.7, label=name)
        if (fit := fits.get(name)) is not None:
            ax.plot(xs, fit.share(xs), color=color, label=f"fit: w50 {fit.w50:,.0f} tokens, scale {fit.scale:,.0f}")
    if capacity is not None:
        ax.axvline(capacity, color="gray", ls="--", label=f"KV capacity {capacity:,} tokens")
    ax.set_xlabel("KV tokens written by other requests between query and request")
    ax.set_ylabel("share of the prompt's cacheable tokens found cached")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
