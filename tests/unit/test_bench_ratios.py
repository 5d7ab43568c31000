"""Ratios to FCFS: paired by prompt, estimated over rounds, with a bootstrap interval that covers the truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lengthwise.bench.ratios import METRICS, PairedRounds, Ratio, ratios
from lengthwise.core.records import RequestRecord


def run(e2e: np.ndarray, ttft_share: float = 0.2) -> list[RequestRecord]:
    return [
        RequestRecord(id=f"r{i:04d}", arrival=0.0, first_token_time=ttft_share * t, finish_time=t, output_tokens=10)
        for i, t in enumerate(e2e)
    ]


def test_an_arm_exactly_faster_on_every_prompt_has_a_tight_interval_at_its_ratio() -> None:
    rng = np.random.default_rng(1)
    rounds = [rng.uniform(1, 60, 40) for _ in range(3)]
    paired = PairedRounds([run(0.8 * e) for e in rounds], [run(e) for e in rounds], [9.0, 9.0, 9.0], [10.0, 10.0, 10.0])
    out = ratios(paired, replicates=300)
    assert list(out) == list(METRICS)
    for name in ("mean E2E", "median E2E", "p99 E2E", "mean TTFT"):
        r = out[name]
        assert r.estimate == pytest.approx(0.8) and r.low == pytest.approx(0.8) and r.high == pytest.approx(0.8)
        assert r.per_round == pytest.approx((0.8, 0.8, 0.8))
    assert out["output tok/s"].estimate == pytest.approx(0.9)


def test_the_interval_spans_the_noise_of_prompts_and_rounds() -> None:
    rng = np.random.default_rng(2)
    base = [rng.uniform(1, 60, 60) for _ in range(5)]
    # Each round runs the arm at 0.8 of FCFS's time, times a machine-speed wobble, plus per-prompt noise.
    arm = [0.8 * b * rng.uniform(0.9, 1.1) * rng.lognormal(0, 0.3, b.size) for b in base]
    r = ratios(PairedRounds([run(a) for a in arm], [run(b) for b in base], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]))["mean E2E"]
    assert r.low < r.estimate < r.high
    assert r.low < 0.85 and r.high > 0.8 and r.high - r.low > 0.05
    assert min(r.per_round) < r.estimate < max(r.per_round)


def test_a_prompt_failed_in_any_run_leaves_every_run() -> None:
    e = np.arange(1.0, 11.0)
    arm = run(e)
    arm[9] = RequestRecord(id="r0009", arrival=0.0, error="HTTP 503")  # the longest, only in the arm
    out = ratios(PairedRounds([arm], [run(e)], [1.0], [1.0]), replicates=50)
    assert out["mean E2E"].estimate == pytest.approx(1.0)  # not 45/55: the prompt is left out of FCFS too
    two = ratios(PairedRounds([arm, run(e)], [run(e), run(e)], [1.0, 1.0], [1.0, 1.0]), replicates=50)
    assert two["mean E2E"].per_round == pytest.approx((1.0, 1.0))  # and out of every round


def test_one_round_has_no_throughput_interval_and_the_text_says_both_forms() -> None:
    e = np.arange(1.0, 11.0)
    out = ratios(PairedRounds([run(e)], [run(e)], [2.0], [4.0]), replicates=50)
    assert math.isnan(out["output tok/s"].low) and out["output tok/s"].text() == "0.50×"
    assert Ratio((0.8,), 0.834, 0.761, 0.912).text() == "0.83× [0.76, 0.91]"
