"""Benchmark prompts by workload name: real ShareGPT prompts, or a user's JSONL file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: A seeded sample is drawn from this many leading prompts of the split, so that a
#: run's prompts are varied yet cheap to load (each is token-counted for the filter).
SAMPLE_POOL = 2_000


def load_prompts(workload: str, n: int, seed: int = 0, max_prompt_tokens: int | None = 512) -> list[str]:
    """`n` prompt texts for `workload`.

    `sharegpt` (dev split, its first `BENCH_RECORDS` records: held out from every label)
    or `sharegpt:test`: a seeded sample of first human turns, dropping prompts over
    `max_prompt_tokens` (long prefills dominate on a CPU engine). A path to a `.jsonl` file: its first `n` lines' `prompt` field.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    name, _, split = workload.partition(":")
    if name == "sharegpt":
        from lengthwise.workload.sharegpt import BENCH_RECORDS, load_sharegpt

        split = split or "dev"
        pool = load_sharegpt(split, limit=max(SAMPLE_POOL, n), max_prompt_tokens=max_prompt_tokens)  # type: ignore[arg-type]
        where = ""
        if split == "dev":  # the head of dev: no shipped model was trained on it
            pool, where = [p for p in pool if p.index < BENCH_RECORDS], f" among its first {BENCH_RECORDS} records"
        if len(pool) < n:
            raise ValueError(f"only {len(pool)} ShareGPT {split} prompts fit max_prompt_tokens={max_prompt_tokens}{where}")
        picks = np.random.default_rng(seed).choice(len(pool), size=n, replace=False)
        return [pool[i].text for i in sorted(picks)]
    path = Path(workload)
    if path.suffix == ".jsonl" and path.exists():
        with path.open() as f:
            prompts = [json.loads(line)["prompt"] for line in f if line.strip()][:n]
        if len(prompts) < n:
            raise ValueError(f"{path}: {len(prompts)} prompts, {n} requested")
        return prompts
    raise ValueError(f"unknown workload {workload!r}: use sharegpt, sharegpt:test or a .jsonl file of {{'prompt': ...}}")
