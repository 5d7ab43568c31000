"""The one background thread that learning runs in, using at most a share of one core.

Refits, quality checks and state saves take milliseconds to seconds of CPU. On the
event loop they delay every request; run freely, they take cores from a CPU engine.
So predictors and the gateway hand their learning to `learning_worker()`: one thread
per process that runs tasks in the order given, and rests after each task long enough
that learning uses at most `share` of a core. The backlog is bounded: a task given
beyond it is dropped (learning then sees a sample of the completions, not all).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Longest rest after one task, so that one huge task cannot stall learning for minutes.
MAX_REST_S = 10.0


class Worker:
    """One daemon thread running tasks in order, at most `share` of a core; see the module docstring."""

    def __init__(self, name: str, *, share: float = 0.1, max_backlog: int = 10_000) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.name = name
        self.share = share
        self.dropped = 0
        self._tasks: queue.Queue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]] = queue.Queue(max_backlog)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def backlog(self) -> int:
        return self._tasks.qsize()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Run `fn(*args)` in the worker after what was given before; None if the backlog is full."""
        future: Future[T] = Future()
        try:
            self._tasks.put_nowait((future, fn, args))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("%s: backlog full, %d task(s) dropped so far", self.name, self.dropped)
            return None
        self._start()
        return future

    def wait(self, timeout: float | None = None) -> bool:
        """Return once every task given so far has run (True), or after `timeout` (False)."""
        if threading.current_thread() is self._thread:
            return True  # a task waiting for its own worker would wait forever
        deadline = None if timeout is None else time.monotonic() + timeout
        marker: Future[None] = Future()
        try:  # behind a full backlog, the marker waits for room
            self._tasks.put((marker, lambda: None, ()), timeout=timeout)
            self._start()
            marker.result(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        except (queue.Full, TimeoutError):
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            future, fn, args = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            used = time.thread_time()
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # the task's caller sees it; the worker goes on
                future.set_exception(e)
            used = time.thread_time() - used
            time.sleep(min(used * (1 / self.share - 1), MAX_REST_S))


_learning: Worker | None = None
_learning_lock = threading.Lock()


def learning_worker() -> Worker:
    """The process's learning worker (started on first use)."""
    global _learning
    with _learning_lock:
        if _learning is None:
            _learning = Worker("lengthwise-learning")
        return _learning
