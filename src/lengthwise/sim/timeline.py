"""One simulated time for many engines: a heap of their stretches, so each event costs O(log N).

Each engine plans a stretch (one step with prefill chunks, or decode-only steps
through which nothing can change; `EngineRun.plan`) and the heap orders the
stretches' ends. `advance_to(t)` applies every stretch that ends by t, so whoever
routes a request at t sees each engine as it is then; `push` hands an engine a
request at t, cutting its decode stretch at the first step that reaches t (as an
arrival does in one engine). Engines never interact otherwise, so this is exact: a
one-engine timeline is the single-engine simulator, step for step.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence

from lengthwise.sim.engine import EngineRun

#: Heap entry phases: apply a planned stretch (at its end), or plan the next one (at the engine's clock).
_COMMIT, _PLAN = 0, 1


class Timeline:
    """Engines fed by `push` (their runs started `routed`), advanced together in time order.

    `after_commit(i, now)` is called whenever engine i finished a stretch (requests may
    have completed, seats freed), before it plans its next: a shared queue in front
    hands it more there.
    """

    def __init__(self, engines: Sequence[EngineRun], after_commit: Callable[[int, float], None] | None = None) -> None:
        self.engines = list(engines)
        self.after_commit = after_commit
        #: (time, phase, engine, version): each engine's one live entry is its latest version.
        self._heap: list[tuple[float, int, int, int]] = []
        self._version = [0] * len(self.engines)
        #: The phase and time of each engine's live entry; phase None: idle until a request comes.
        self._live: list[int | None] = [None] * len(self.engines)
        self._when = [0.0] * len(self.engines)

    def advance_to(self, t: float) -> None:
        """Apply every stretch that ends by `t` and plan the engines' next ones (those at t after t's requests)."""
        heap, version, engines = self._heap, self._version, self.engines
        while heap:
            when, phase, i, v = heap[0]
            if when > t or (when == t and phase == _PLAN):
                return
            heapq.heappop(heap)
            if v != version[i]:
                continue
            engine = engines[i]
            if phase == _COMMIT:
                engine.commit()
                if self.after_commit is not None:
                    self.after_commit(i, engine.now)
                self._schedule(i, engine.now, _PLAN)
                continue
            engine.now = max(engine.now, when)
            end = engine.plan()
            if end is not None:
                self._schedule(i, end, _COMMIT)
            elif (arrival := engine.next_arrival_time()) < math.inf:  # a real request after its query
                self._schedule(i, arrival, _PLAN)
            else:
                self._live[i] = None

    def push(self, i: int, row: int, t: float) -> None:
        """Engine `i` gets workload row `row` at `t` (not before the last `advance_to`)."""
        engine = self.engines[i]
        engine.push(t, row)
        live = self._live[i]
        if live is None or (live == _PLAN and self._when[i] > t):  # idle, or waiting for a query's request
            self._schedule(i, max(engine.now, t), _PLAN)
        elif live == _COMMIT and engine.decoding:
            self._schedule(i, engine.replan(), _COMMIT)

    def finish(self) -> None:
        """Run every engine until nothing is left to do."""
        self.advance_to(math.inf)
        if any(e.scheduler.has_waiting() for e in self.engines):
            raise RuntimeError("simulation stuck: requests wait but none can be admitted")

    def _schedule(self, i: int, when: float, phase: int) -> None:
        self._version[i] += 1
        self._live[i], self._when[i] = phase, when
        heapq.heappush(self._heap, (when, phase, i, self._version[i]))
