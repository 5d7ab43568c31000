"""The fixed train / validation / test split of labelled prompts, a pure function of the prompt id.

Why by hash and not by position: the labelling job grows its file over many sessions
and in no fixed order (answers arrive as they finish), so a split by position would
move prompts between parts as the file grows. `split_of(id)` never changes, so a
prompt tested once is tested forever, and every tool (the ranker's training, the
proxy pretraining, the evaluation) agrees on it without sharing any state:

    sha256(id) mod 100:  0-69 train,  70-84 validation,  85-99 test
"""

from __future__ import annotations

import hashlib
from typing import Literal

Part = Literal["train", "val", "test"]
PARTS: tuple[Part, ...] = ("train", "val", "test")
#: Upper bounds (exclusive) of the train and validation buckets out of 100.
TRAIN_BELOW, VAL_BELOW = 70, 85


def bucket(prompt_id: str) -> int:
    """The prompt's bucket, 0-99: sha256 of its id, mod 100."""
    return int(hashlib.sha256(prompt_id.encode("utf-8")).hexdigest(), 16) % 100


def split_of(prompt_id: str) -> Part:
    """Which part of the split a prompt belongs to, forever."""
    b = bucket(prompt_id)
    return "train" if b < TRAIN_BELOW else "val" if b < VAL_BELOW else "test"
