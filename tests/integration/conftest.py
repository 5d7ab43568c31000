"""One real engine per test session.

With LENGTHWISE_ENGINE_URL set, the tests use the engine already running there
(LENGTHWISE_ENGINE_MAX_NUM_SEQS tells its --max-num-seqs); otherwise the session
starts the embedded engine (as `lengthwise engine up` does) on a free port and stops it at the end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rich.console import Console

from lengthwise.bench.cpus import cores_for, pinned, usable
from lengthwise.engine import MODEL_NAME, EngineConfig, EngineError, EngineHandle, server
from lengthwise.engine.progress import Progress
from lengthwise.engine.resources import free_port

MODEL = MODEL_NAME
SESSION_MAX_NUM_SEQS = 2  # small, so that requests queue and priorities matter
#: The split layout (bench/cpus.py): the engine's threads on their own core, the tests on the other;
#: on 2 cores, threads spread over both collapse whenever a test process takes CPU.
CORES = cores_for(usable("split"))


@dataclass(frozen=True)
class Engine:
    url: str  # the server's root, e.g. http://127.0.0.1:8000 (the OpenAI API is under /v1)
    model: str
    max_num_seqs: int


@pytest.fixture(scope="session")
def managed_engine() -> Iterator[EngineHandle | None]:
    """The engine this session started, or None when LENGTHWISE_ENGINE_URL names one that isn't ours."""
    if os.environ.get("LENGTHWISE_ENGINE_URL"):
        yield None
        return
    config = EngineConfig(port=free_port(), policy="priority", max_num_seqs=SESSION_MAX_NUM_SEQS,
                          omp_threads_bind=CORES.engine_bind)
    try:
        handle = server.start(config, progress=Progress(Console(stderr=True)))
    except EngineError as e:
        pytest.fail(f"Could not start the embedded engine: {e}", pytrace=False)
    yield handle
    server.stop(config.port)  # by port: a test may have restarted it


@pytest.fixture(autouse=True)
def _on_the_client_core() -> Iterator[None]:
    """Each integration test (and what it starts) runs on the cores the session's engine leaves free;
    the unit tests after it get every core back."""
    with pinned(CORES):
        yield


@pytest.fixture(scope="session")
def engine(managed_engine: EngineHandle | None) -> Engine:
    if managed_engine is None:
        url = os.environ["LENGTHWISE_ENGINE_URL"]
        max_num_seqs = int(os.environ.get("LENGTHWISE_ENGINE_MAX_NUM_SEQS", "4"))
        return Engine(url.rstrip("/").removesuffix("/v1"), MODEL, max_num_seqs)
    return Engine(managed_engine.url, managed_engine.model, managed_engine.config.max_num_seqs)
