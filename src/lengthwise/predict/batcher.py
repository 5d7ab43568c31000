"""Batch work items from concurrent requests into one call, in one worker thread.

An embedding costs a fixed few milliseconds per onnxruntime call on top of its
per-token cost, and many concurrent requests each making their own call would also
fight over the cores. `MicroBatcher` collects the items submitted within `window_s`
of each other (up to `max_batch`) and runs `fn` on them in its one thread; items that
arrive while it is busy form the next batch.

Two classes of items: urgent ones (a request waits for its prediction) always go first;
background ones (predicted only to learn, `LengthRequest.background`) run only when no
urgent item waits, and use at most `background_share` of a core. Both waiting lines are
bounded, and `submit` raises `Backlogged` at once beyond the bound, since an answer that
comes too late is worth nothing: an urgent item when it and those waiting would take more
than `max_wait_s` to compute (at the measured seconds per item), a background one beyond
`max_waiting`. A caller that stops waiting (its deadline passed) leaves its item behind:
a batch skips the items nobody waits for any more, and the work of a batch already
running finishes in the background.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import KW_ONLY, dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


class Backlogged(RuntimeError):
    """Too many items wait already: the caller should not wait for this one."""


@dataclass(eq=False)
class _Item(Generic[In, Out]):
    value: In
    future: asyncio.Future[Out]


@dataclass(eq=False)
class MicroBatcher(Generic[In, Out]):
    """`await submit(x)` → `fn([..., x, ...])[i]`, computed in one worker thread; see the module docstring.

    Used from one event loop; `fn` maps a list of items to a list of results, in order.
    """

    fn: Callable[[list[In]], Sequence[Out]]
    _: KW_ONLY
    name: str = "batcher"
    max_batch: int = 16
    window_s: float = 0.002
    max_waiting: int = 64
    max_wait_s: float = 0.25
    background_share: float = 0.05
    #: Seconds per item of recent batches (moving average), for the urgent line's bound.
    item_s: float = field(default=0.0, init=False)
    _executor: ThreadPoolExecutor = field(init=False, repr=False)
    _urgent: deque[_Item[In, Out]] = field(default_factory=deque, init=False, repr=False)
    _background: deque[_Item[In, Out]] = field(default_factory=deque, init=False, repr=False)
    _busy: bool = field(default=False, init=False, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    #: Loop time before which no background batch starts (its share of the core).
    _background_after: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_waiting < 1:
            raise ValueError("max_batch and max_waiting must be at least 1")
        if not 0 < self.background_share <= 1:
            raise ValueError("background_share must be in (0, 1]")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.name)

    async def submit(self, value: In, *, background: bool = False) -> Out:
        """The result of `value`; raises Backlogged when its waiting line is full, or what `fn` raised."""
        line = self._background if background else self._urgent
        _drop_abandoned(line)
        # An urgent item with none ahead of it is always taken: else one slow batch (a cold model)
        # would set a per-item time that refuses every later item, and nothing would measure it again.
        if len(line) >= self.max_waiting or not background and line and (len(line) + 1) * self.item_s > self.max_wait_s:
            raise Backlogged(f"{len(line)} {'background' if background else 'urgent'} items wait already")
        loop = asyncio.get_running_loop()
        item: _Item[In, Out] = _Item(value, loop.create_future())
        line.append(item)
        self._schedule(loop, self.window_s)
        return await item.future

    def close(self) -> None:
        """Stop: waiting callers get an error; a batch under way is not waited for."""
        if self._timer is not None:
            self._timer.cancel()
        for item in (*self._urgent, *self._background):
            if not item.future.done():
                item.future.set_exception(RuntimeError("the batcher is closed"))
        self._urgent.clear()
        self._background.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _schedule(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Start the next batch after `delay` (later for background items only), unless one is due or running."""
        if self._busy or self._timer is not None:
            return
        if not self._urgent:
            if not self._background:
                return
            delay = max(delay, self._background_after - loop.time())
        self._timer = loop.call_later(delay, self._start, loop)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if _drop_abandoned(self._urgent):
            line, background = self._urgent, False
        elif loop.time() >= self._background_after:
            line, background = self._background, True
        else:  # background items only, before their turn
            self._schedule(loop, 0.0)
            return
        batch: list[_Item[In, Out]] = []
        while line and len(batch) < self.max_batch:
            item = line.popleft()
            if not item.future.done():
                batch.append(item)
        if not batch:
            self._schedule(loop, 0.0)
            return
        self._busy = True
        work = loop.run_in_executor(self._executor, _timed, self.fn, [item.value for item in batch])
        started = loop.time()
        work.add_done_callback(lambda done: self._finished(loop, batch, background, done, started))

    def _finished(self, loop: asyncio.AbstractEventLoop, batch: list[_Item[In, Out]], background: bool,
                  done: asyncio.Future[tuple[Sequence[Out], float]], started: float) -> None:
        self._busy = False
        per_item = (loop.time() - started) / len(batch)
        self.item_s = per_item if not self.item_s else 0.8 * self.item_s + 0.2 * per_item
        if done.cancelled():
            error: BaseException | None = RuntimeError("the batch was cancelled")
        else:
            error = done.exception()
        if error is None:
            results, cpu_s = done.result()
            if background:
                self._background_after = loop.time() + cpu_s * (1 / self.background_share - 1)
            if len(results) != len(batch):
                error = RuntimeError(f"{len(results)} results for {len(batch)} items")
        for i, item in enumerate(batch):
            if item.future.done():
                continue
            if error is None:
                item.future.set_result(results[i])
            else:
                item.future.set_exception(error)
        self._schedule(loop, 0.0)  # what arrived meanwhile has waited long enough


def _timed(fn: Callable[[list[In]], Sequence[Out]], values: list[In]) -> tuple[Sequence[Out], float]:
    """`fn(values)` and the CPU seconds the worker thread spent on it."""
    started = time.thread_time()
    results = fn(values)
    return results, time.thread_time() - started


def _drop_abandoned(line: deque[_Item[In, Out]]) -> bool:
    """Drop the items at the head of `line` that nobody waits for; True if an item remains."""
    while line and line[0].future.done():
        line.popleft()
    return bool(line)
