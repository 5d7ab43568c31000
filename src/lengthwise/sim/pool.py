"""Several simulated engines behind one router, each request routed when it is submitted.

A pool serves one workload on N engines (`Simulator`s, each with its own policy
object, as N vLLM instances each run their own scheduler). Submissions are
(time, workload row) pairs; the engines share one `Timeline`, so before routing
one the router reads each engine's state as it is at that time. The engines never
interact otherwise, so this is exact: an engine's future does not depend on
another's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lengthwise.core.records import RequestRecord
from lengthwise.sim.cost import CostModel
from lengthwise.sim.engine import EngineRun, Simulator, request_record
from lengthwise.sim.request import SimRequest
from lengthwise.sim.timeline import Timeline
from lengthwise.sim.workload import Workload

#: Picks the engine (an index into the runs) for a workload row.
Router = Callable[[Sequence[EngineRun], int], int]


def least_unfinished(runs: Sequence[EngineRun], row: int) -> int:
    """The engine holding the fewest unfinished requests (the lowest index on ties): join the shortest queue."""
    return min(range(len(runs)), key=lambda k: runs[k].unfinished())


def least_predicted_work(runs: Sequence[EngineRun], row: int) -> int:
    """The engine whose unfinished requests have the fewest predicted output tokens (TetriInfer's idea:
    balance predicted decode work, not request counts, so long decodes do not pile up on one instance)."""
    return min(range(len(runs)), key=lambda k: runs[k].predicted_outstanding)


@dataclass
class PoolRun:
    """A pool's engines after the run, and every request by workload row."""

    runs: list[EngineRun]
    finished: list[SimRequest]

    def busy_share(self, span_s: float) -> float:
        """The share of the engines' time they were stepping, over `span_s` seconds each."""
        return sum(r.busy_s for r in self.runs) / (len(self.runs) * span_s) if span_s > 0 else 0.0

    def seat_share(self, span_s: float) -> float:
        """Mean running sequences over the pool's seats (`max_num_seqs` each), over `span_s`."""
        seats = sum(r.config.max_num_seqs for r in self.runs)
        return sum(r.seat_s for r in self.runs) / (seats * span_s) if span_s > 0 else 0.0

    def records(self, workload: Workload, cost: CostModel) -> list[RequestRecord]:
        """Each request as the metrics read it, with its ideal (alone, on one engine) latency."""
        budget = self.runs[0].config.max_num_batched_tokens
        ideal = cost.ideal_latency(workload.prompt_tokens, workload.output_tokens, budget)
        return [request_record(r, float(workload.predicted[i]), float(ideal[i])) for i, r in enumerate(self.finished)]


def run_pool(
    simulators: Sequence[Simulator],
    workload: Workload,
    submissions: np.ndarray,
    route: Router,
    progress: Callable[[int], None] | None = None,
) -> PoolRun:
    """Serve every workload row, submitted at `submissions[row]`, on the engines `route` picks."""
    if len(submissions) != len(workload):
        raise ValueError(f"pool: {len(submissions)} submission times for {len(workload)} requests")
    runs = [s.start(workload, routed=True) for s in simulators]
    timeline = Timeline(runs)
    for n, row in enumerate(np.argsort(submissions, kind="stable").tolist()):
        at = float(submissions[row])
        timeline.advance_to(at)
        timeline.push(route(runs, row), row, at)
        if progress is not None and n % 1000 == 0:
            progress(sum(r.done for r in runs))
    timeline.finish()
    finished: list[SimRequest | None] = [None] * len(workload)
    for run in runs:
        for row in run.arrival_rows:
            finished[row] = run.finished[row]
    missing = [i for i, r in enumerate(finished) if r is None]
    if missing:
        raise RuntimeError(f"pool: {len(missing)} requests never finished, e.g. row {missing[0]}")
    if progress is not None:
        progress(len(workload))
    return PoolRun(runs, finished)  # type: ignore[arg-type]
