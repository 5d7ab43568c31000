"""Shared learning through a Redis stream (fakeredis): two replicas learn from each other's completions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import fakeredis
import numpy as np

from lengthwise.gateway.shared_learning import SharedLearning
from lengthwise.predict.auto.selector import AutoPredictor
from lengthwise.predict.base import Predictor
from lengthwise.predict.worker import learning_worker
from test_learned_predictor import feed, held_out_tau, make
from test_selector import _noise, _run, _signal

#: Only a replica that never hears from the other reaches it.
HANG_GUARD_S = 30.0


@contextlib.asynccontextmanager
async def sharing(*predictors: Predictor) -> AsyncIterator[list[SharedLearning]]:
    """Each predictor a replica of its own, all sharing one (fake) Redis."""
    server = fakeredis.FakeServer()
    replicas = [SharedLearning(fakeredis.FakeAsyncRedis(server=server, decode_responses=True), f"r{i}", p)
                for i, p in enumerate(predictors)]
    tasks = [asyncio.create_task(r.run()) for r in replicas]
    await asyncio.sleep(0)  # each predictor shares from here on
    try:
        yield replicas
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until(done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    learning_worker().wait(HANG_GUARD_S)


async def test_auto_windows_fill_with_every_replicas_completions() -> None:
    """Neither replica alone has the 40 completions `auto` needs to choose; together they do."""
    a, b = (AutoPredictor([_noise(), _signal()], min_requests=40, recheck=1) for _ in range(2))
    async with sharing(a, b) as (share_a, share_b):
        await _run(a, 30, seed=1)
        await _run(b, 30, seed=2, first=30)  # other prompts: a prompt counts once in a window
        learning_worker().wait(HANG_GUARD_S)
        await _until(lambda: share_a.absorbed == 30 and share_b.absorbed == 30)
    for auto in (a, b):
        assert auto.status()["candidates"]["signal"]["n"] == 60
        assert auto.choice == "signal"
    assert share_a.published == share_b.published == 30


async def test_the_learned_predictor_learns_from_another_replicas_feature_vectors() -> None:
    """B never observes a completion of its own, yet ranks held-out prompts from A's shared vectors."""
    a, b = make(retrain_every=10), make(retrain_every=10)
    async with sharing(a, b) as (_, share_b):
        await feed(a, 120)
        await _until(lambda: share_b.absorbed == 120)
    b.wait_idle(timeout=HANG_GUARD_S)
    assert b.status()["observed"] == 120
    assert b.inner.observed == []  # no completion of its own
    assert await held_out_tau(b) > 0.8


def test_a_vector_of_another_layout_is_ignored() -> None:
    predictor = make()
    predictor.absorb({"vector": np.zeros(predictor.width + 1).tolist(), "actual": 5})
    predictor.absorb({"vector": np.zeros(predictor.width).tolist(), "actual": 5})
    assert predictor.status()["observed"] == 1
