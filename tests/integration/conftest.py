"""One real engine per test session.

With LENGTHWISE_ENGINE_URL set, the tests use the engine already running there
(LENGTHWISE_ENGINE_MAX_NUM_SEQS tells its --max-num-seqs); otherwise the session
starts the embedded engine with `lengthwise engine up` and stops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

MODEL = "qwen2.5-coder-0.5b-instruct"


@dataclass(frozen=True)
class Engine:
    url: str
    model: str
    max_num_seqs: int


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    url = os.environ.get("LENGTHWISE_ENGINE_URL")
    if url:
        yield Engine(url.rstrip("/"), MODEL, int(os.environ.get("LENGTHWISE_ENGINE_MAX_NUM_SEQS", "4")))
        return
    pytest.skip("the managed engine fixture arrives with `lengthwise engine up`")
