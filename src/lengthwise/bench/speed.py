"""The engine's own speed during each run, so that a run slowed by the shared machine shows as such.

Speed is the output tokens the engine generated per busy second. The tokens are the
change of vLLM's `vllm:generation_tokens_total` over the run (a gateway arm's
prediction queries included: the engine did that work too), or the records' output
tokens where the server exports no such counter. A busy second is one in which at
least one of the run's requests was in flight (the union of their [sent, finished]
intervals), so the idle gaps between arrivals at a low rate do not read as a slow
engine. The mean inter-token latency comes from vLLM's histogram, else from the
records' streamed chunks.

A run whose speed is more than `SPEED_TOLERANCE` away from the median of its round
is flagged: its ratios to FCFS say more about the machine than about the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lengthwise.bench.runfile import BenchRun
from lengthwise.core.records import RequestRecord

SPEED_TOLERANCE = 0.15
GENERATED = "vllm:generation_tokens_total"
ITL_SUM, ITL_COUNT = "vllm:inter_token_latency_seconds_sum", "vllm:inter_token_latency_seconds_count"


@dataclass(frozen=True)
class EngineSpeed:
    tokens_per_busy_s: float
    busy_s: float
    mean_itl_ms: float
    #: "metrics" when the tokens come from the engine's counter, "records" otherwise.
    source: str

    def text(self) -> str:
        return (
            f"engine {self.tokens_per_busy_s:.1f} output tok/s over {self.busy_s:.0f} busy s "
            f"(from {self.source}), mean ITL {self.mean_itl_ms:.0f} ms"
        )


def busy_seconds(records: Sequence[RequestRecord]) -> float:
    """Seconds in which at least one of `records` was in flight."""
    total, end = 0.0, -math.inf
    for start, finish in sorted((r.arrival, r.finish_time) for r in records if r.finish_time is not None):
        if finish > end:
            total += finish - max(start, end)
            end = finish
    return total


def counter_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """How much each counter read both times grew over a run."""
    return {name: after[name] - before[name] for name in after if name in before}


def engine_speed(run: BenchRun) -> EngineSpeed:
    """The speed of the engine over `run`, from the counter deltas in its config (`engine_metrics`)."""
    counters: Mapping[str, float] = run.config.get("engine_metrics") or {}
    busy = busy_seconds(run.records)
    if GENERATED in counters:
        tokens, source = counters[GENERATED], "metrics"
    else:
        tokens, source = float(sum(r.output_tokens for r in run.succeeded)), "records"
    if counters.get(ITL_COUNT):
        itl_ms = counters[ITL_SUM] / counters[ITL_COUNT] * 1000
    else:
        gaps = [x for r in run.succeeded for x in r.itl or []]
        itl_ms = float(np.mean(gaps)) * 1000 if gaps else math.nan
    return EngineSpeed(tokens / busy if busy > 0 else math.nan, busy, itl_ms, source)


def relative_to_round(rounds: Sequence[int], speeds: Sequence[float]) -> list[float]:
    """Each run's speed ÷ the median speed of its round, minus 1 (0.2: 20% faster than its round-mates)."""
    by_round: dict[int, list[float]] = {}
    for r, s in zip(rounds, speeds, strict=True):
        by_round.setdefault(r, []).append(s)
    medians = {r: float(np.nanmedian(v)) for r, v in by_round.items()}
    return [s / medians[r] - 1 if medians[r] > 0 else math.nan for r, s in zip(rounds, speeds, strict=True)]


def is_outlier(deviation: float) -> bool:
    return abs(deviation) > SPEED_TOLERANCE
