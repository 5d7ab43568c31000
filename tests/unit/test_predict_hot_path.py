"""Prediction at a bounded cost: prompts read once and in part, batched featurizing with a deadline,
and learning in one background worker."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from lengthwise.core.tokens import EXACT_CHARS, count_tokens, estimate_tokens
from lengthwise.predict.base import LengthRequest
from lengthwise.predict.batcher import Backlogged, MicroBatcher
from lengthwise.predict.learned.embedding import PromptEmbedder
from lengthwise.predict.prompt import HEAD_CHARS, read_prompt
from lengthwise.predict.worker import Worker

BIG = "All work and no play makes Jack a dull boy. " * 120_000  # 5.3 MB


def test_long_texts_are_counted_at_a_bounded_cost_and_close_to_exact() -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it naps. " * 400
    assert estimate_tokens(text[:EXACT_CHARS]) == count_tokens(text[:EXACT_CHARS])  # short: exact
    assert estimate_tokens(text) == pytest.approx(count_tokens(text), rel=0.05)
    started = time.perf_counter()
    assert estimate_tokens(BIG) == pytest.approx(len(BIG) / 4, rel=0.05)
    assert time.perf_counter() - started < 0.5  # counting it all took seconds


def test_a_requests_prompt_is_read_once_and_only_its_head_kept() -> None:
    request = LengthRequest("chat", {"messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": BIG}]})
    prompt = read_prompt(request)
    assert read_prompt(request) is prompt  # shared by every predictor of the request
    assert prompt.head == ("Be brief.\n" + BIG)[:HEAD_CHARS] and prompt.chars == len(BIG) + 10
    other = LengthRequest("chat", {"messages": [{"role": "user", "content": BIG[:-1] + "!"}]})
    assert read_prompt(other).key != prompt.key


def test_a_megabyte_prompt_is_embedded_as_fast_as_its_head() -> None:
    embedder = PromptEmbedder(max_length=64, cache_size=0)
    head = embedder.embed(BIG[:4096])
    started = time.perf_counter()
    whole = embedder.embed(BIG)
    assert time.perf_counter() - started < 2.0  # tokenizing all of it took 40 s
    assert float(whole @ head) == pytest.approx(1.0, abs=1e-5)
    texts = ["Write a long essay about Rome.", "hi", "def add(a, b): return a + b " * 20]
    together = embedder.embed_many(texts)  # one padded batch per similar length
    for text, row in zip(texts, together):
        assert float(row @ embedder.embed(text)) == pytest.approx(1.0, abs=1e-5)


async def test_items_arriving_together_share_a_call_and_urgent_ones_go_first() -> None:
    calls: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        calls.append(items)
        time.sleep(0.05)
        return [item.upper() for item in items]

    batcher = MicroBatcher(run, max_batch=4, window_s=0.01)
    first = [asyncio.create_task(batcher.submit(x)) for x in "abc"]
    await asyncio.sleep(0.02)  # the first batch runs; what comes now waits for the next
    later = [asyncio.create_task(batcher.submit(x, background=True)) for x in "de"]
    urgent = asyncio.create_task(batcher.submit("f"))
    assert [await t for t in first] == ["A", "B", "C"] and await urgent == "F"
    assert [await t for t in later] == ["D", "E"]
    assert calls == [["a", "b", "c"], ["f"], ["d", "e"]]
    batcher.close()


async def test_a_deadline_ends_the_wait_and_a_full_line_answers_at_once() -> None:
    release = threading.Event()
    ran: list[list[int]] = []

    def stuck(items: list[int]) -> list[int]:
        ran.append(items)
        release.wait(10)
        return items

    batcher = MicroBatcher(stuck, max_batch=1, window_s=0.0, max_waiting=2)
    running = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await batcher.submit(1)  # waits behind the stuck batch until its deadline
    assert time.perf_counter() - started < 0.5
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(Backlogged):
        await batcher.submit(4)  # bounded: no queue of work nobody will wait for
    release.set()
    assert await running == 0 and [await t for t in waiting] == [2, 3]
    assert ran == [[0], [2], [3]]  # the abandoned item was skipped
    batcher.close()


async def test_urgent_items_are_refused_when_those_waiting_would_take_too_long() -> None:
    def slow(items: list[int]) -> list[int]:
        time.sleep(0.1 * len(items))
        return items

    batcher = MicroBatcher(slow, max_batch=1, window_s=0.0, max_wait_s=0.25)
    assert await batcher.submit(0) == 0  # measures about 0.1 s per item
    waiting = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)  # both wait now: 0.2 s of work
    with pytest.raises(Backlogged):
        await batcher.submit(3)  # a third would make it 0.3 s
    assert [await t for t in waiting] == [1, 2]
    assert await batcher.submit(4, background=True) == 4  # the background line is bounded by count only
    batcher.close()


async def test_one_slow_batch_does_not_lock_out_later_urgent_items() -> None:
    """A cold first batch (model loading) measured seconds per item; an urgent item with nothing
    waiting ahead must still be taken, or the measure would never be refreshed."""
    delays = [1.0, 0.01, 0.01]

    def warming(items: list[int]) -> list[int]:
        time.sleep(delays.pop(0) if delays else 0.01)
        return items

    batcher = MicroBatcher(warming, max_batch=1, window_s=0.0, max_wait_s=0.25)
    assert await batcher.submit(0) == 0  # about 1 s per item now
    assert await batcher.submit(1) == 1  # nothing ahead of it: taken
    assert batcher.item_s < 1.0
    batcher.close()


def test_the_learning_worker_runs_in_order_within_its_share_and_bounded() -> None:
    worker = Worker("test-learning", share=0.5, max_backlog=3)
    done: list[int] = []
    started, gate = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(5)

    worker.submit(hold)
    assert started.wait(5)
    futures = [worker.submit(done.append, i) for i in range(3)]
    assert worker.submit(done.append, 99) is None and worker.dropped == 1  # backlog full
    gate.set()
    assert worker.wait(5) and done == [0, 1, 2] and all(f is not None and f.done() for f in futures)

    def busy() -> None:
        end = time.thread_time() + 0.1
        while time.thread_time() < end:
            pass

    started = time.perf_counter()
    worker.submit(busy)
    worker.submit(busy)
    assert worker.wait(5)
    assert time.perf_counter() - started >= 0.3  # 0.2 s of CPU at half a core: rests of 0.1 s after each
