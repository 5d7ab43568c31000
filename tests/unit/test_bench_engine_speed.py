"""The engine's speed per run: tokens from vLLM's counter (or the records) per busy second, flagged per round."""

from __future__ import annotations

import pytest

from lengthwise.bench.runfile import BenchRun
from lengthwise.bench.speed import (
    busy_seconds,
    counter_delta,
    engine_speed,
    is_outlier,
    relative_to_round,
)
from lengthwise.core.records import RequestRecord


def rec(i: int, start: float, end: float, tokens: int = 10) -> RequestRecord:
    return RequestRecord(id=f"r{i}", arrival=start, first_token_time=start + 0.1, finish_time=end,
                         output_tokens=tokens, itl=[0.05] * (tokens - 1))  # fmt: skip


def test_busy_time_is_the_union_of_the_requests_in_flight() -> None:
    records = [rec(0, 0, 2), rec(1, 1, 3), rec(2, 10, 11), rec(3, 10.5, 10.7), RequestRecord(id="x", arrival=4.0)]
    assert busy_seconds(records) == pytest.approx(3 + 1)


def test_speed_from_the_engine_counter_else_from_the_records() -> None:
    records = [rec(0, 0, 2), rec(1, 1, 4)]
    counters = {"vllm:generation_tokens_total": 100.0, "vllm:inter_token_latency_seconds_sum": 3.0,
                "vllm:inter_token_latency_seconds_count": 60.0}  # fmt: skip
    speed = engine_speed(BenchRun({"engine_metrics": counters}, records))
    assert (speed.tokens_per_busy_s, speed.busy_s, speed.mean_itl_ms, speed.source) == (25.0, 4.0, 50.0, "metrics")
    fallback = engine_speed(BenchRun({}, records))
    assert (fallback.tokens_per_busy_s, fallback.mean_itl_ms, fallback.source) == (5.0, pytest.approx(50.0), "records")
    assert "engine 25.0 output tok/s over 4 busy s (from metrics)" in speed.text()


def test_counter_deltas_and_runs_far_from_their_round_median() -> None:
    assert counter_delta({"a": 1.0, "b": 2.0}, {"a": 5.0, "c": 1.0}) == {"a": 4.0}
    deviations = relative_to_round([1, 1, 1, 2, 2, 2], [10.0, 10.5, 8.0, 7.0, 7.0, 9.0])
    assert deviations == pytest.approx([-0.0, 0.05, -0.2, 0.0, 0.0, 2 / 7])
    assert [is_outlier(d) for d in deviations] == [False, False, True, False, False, True]
