"""Report generation from synthetic records: every file is written, the ratios are right."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lengthwise.bench.compare import interleaved, standard_arms
from lengthwise.core.records import RequestRecord
from lengthwise.bench.report import load_results, write_report
from lengthwise.bench.runfile import BenchRun, load_run, save_run

SLOWNESS = {"fcfs": 2.0, "guided": 1.5, "oracle": 1.0}


def synthetic_run(arm: str, rnd: int, n: int = 40, predicted: bool = False) -> BenchRun:
    rng = np.random.default_rng(rnd)
    records = []
    for i in range(n):
        out = int(rng.integers(1, 128))
        arrival = i * 0.5
        first = arrival + SLOWNESS[arm] * rng.uniform(0.1, 2.0)
        records.append(
            RequestRecord(
                id=f"r{i:04d}", arrival=arrival, first_token_time=first, finish_time=first + SLOWNESS[arm] * 0.05 * out,
                prompt_tokens=20, output_tokens=out, itl=[0.05] * (out - 1), cached_tokens=0,
                predicted_tokens=out * 1.3 + 5 if predicted else None, predictor="function" if predicted else None,
            )
        )  # fmt: skip
    records.append(RequestRecord(id="failed", arrival=0.0, error="HTTP 503"))
    return BenchRun({"arm": arm, "round": rnd}, records)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    labels = []
    for r, order in enumerate(interleaved(standard_arms(), rounds=2), start=1):
        for arm in order:
            label = f"round{r}-{arm.name}"
            save_run(tmp_path / "runs" / f"{label}.json", synthetic_run(arm.name, r, predicted=arm.name == "guided"))
            labels.append(label)
    meta = {"model": "m", "max_tokens": 128, "run_order": labels}
    (tmp_path / "comparison.json").write_text(json.dumps(meta))
    return tmp_path


def test_run_files_round_trip(tmp_path: Path) -> None:
    run = synthetic_run("fcfs", 1)
    back = load_run(save_run(tmp_path / "x.json", run))
    assert back.config == run.config and back.records == run.records


def test_report_writes_markdown_summary_and_plots(results: Path) -> None:
    runs, meta = load_results(results)
    assert [r.config["arm"] for r in runs] == ["fcfs", "guided", "oracle", "oracle", "guided", "fcfs"]
    report = write_report(results, runs, meta, goodput=["e2el:5000"])
    text = report.read_text()
    for png in ("e2e_cdf.png", "latency_by_length.png", "queue_over_time.png", "predicted_vs_actual.png"):
        assert (results / png).stat().st_size > 1000
        assert f"({png})" in text
    assert "| fcfs |" in text and "| oracle |" in text
    assert "- round 2, guided: 1 failed (1× HTTP 503)" in text
    assert "- guided scheduled by: function 80" in text
    summary = json.loads((results / "summary.json").read_text())
    ratio = summary["headline"]["guided / fcfs mean E2E"]
    assert len(ratio) == 2 and all(0.6 < x < 0.9 for x in ratio)
    share = summary["headline"]["guided: share of the oracle's gain"]
    assert all(0.2 < x < 0.8 for x in share)
    assert summary["prediction_quality"]["guided"]["kendall_tau"] == pytest.approx(1.0)
    assert all(run["summary"]["failed"] == 1 for run in summary["runs"])
    mean = summary["ratios"]["guided"]["mean E2E"]
    assert mean["low"] <= mean["estimate"] <= mean["high"] and mean["per_round"] == pytest.approx(ratio)
    assert "| arm | mean E2E | median E2E | p99 E2E | mean TTFT | output tok/s |" in text
    assert re.search(r"\| guided \| 0\.\d\d× \[0\.\d\d, 0\.\d\d\] \|", text)
    assert "| arm | max wait s | p99 slowdown | p99 E2E, 10% longest outputs s | p99 E2E, 10% longest prompts s |" in text
    assert summary["runs"][0]["engine_speed"]["source"] == "records"


def test_a_run_whose_engine_ran_far_from_its_round_mates_is_flagged(results: Path) -> None:
    path = results / "runs" / "round1-oracle.json"
    oracle = load_run(path)
    tokens = 3 * sum(r.output_tokens for r in oracle.succeeded)  # the engine's counter: three times the others' speed
    save_run(path, BenchRun({**oracle.config, "engine_metrics": {"vllm:generation_tokens_total": tokens}}, oracle.records))
    runs, meta = load_results(results)
    rows = {line.split(" | ")[1]: line for line in write_report(results, runs, meta).read_text().splitlines()
            if line.startswith("| 1 | ")}  # fmt: skip
    assert rows["oracle"].endswith("⚠ |") and not rows["fcfs"].endswith("⚠ |")


def test_no_share_of_a_gain_the_oracle_did_not_make_and_no_tau_for_equal_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(SLOWNESS, "oracle", 3.0)  # the oracle slower than FCFS in every round
    labels = []
    for arm in ("fcfs", "guided", "oracle"):
        run = synthetic_run(arm, 1)
        if arm == "guided":
            run.records[:] = [replace(r, predicted_tokens=256.0) for r in run.records]
        save_run(tmp_path / "runs" / f"round1-{arm}.json", run)
        labels.append(f"round1-{arm}")
    (tmp_path / "comparison.json").write_text(json.dumps({"model": "m", "max_tokens": 128, "run_order": labels}))
    runs, meta = load_results(tmp_path)
    text = write_report(tmp_path, runs, meta, goodput=None).read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "guided / fcfs mean E2E" in summary["headline"]
    assert "guided: share of the oracle's gain" not in summary["headline"]
    assert "guided: no ranking (every prediction the same: arrival order)" in text


def test_gateway_arms_are_compared_with_the_first_and_their_resumes_reported(tmp_path: Path) -> None:
    """Two gateway arms (the second preempting): ratios to the first, and each run's preemptions and prefill."""
    runs = []
    for r in (1, 2):
        for arm, name in (("fcfs", "fcfs"), ("guided", "sjf"), ("oracle", "srpt")):
            run = synthetic_run(arm, r)
            extra = 700.0 * r if name == "srpt" else 0.0  # srpt's continuations: 700 uncached tokens a round
            run.config.update(arm=name, engine_metrics={"vllm:prompt_tokens_total": 9000.0 + extra,
                                                        "vllm:prompt_tokens_cached_total": 1000.0})  # fmt: skip
            if name != "fcfs":
                run.config["gateway_args"] = ["--mode", "queue"]
                run.config["gateway_metrics"] = {
                    "lengthwise_preemptions_total": 3.0 * r if name == "srpt" else 0.0,
                    "lengthwise_resume_prompt_tokens_total": 2000.0 * r if name == "srpt" else 0.0,
                    "lengthwise_resume_cached_tokens_total": 1300.0 * r if name == "srpt" else 0.0,
                }
            runs.append(run)
    text = write_report(tmp_path, runs, {"max_tokens": 128}).read_text()
    assert "## Relative to sjf, the first gateway arm" in text
    assert re.search(r"\| srpt \| 0\.\d\d× \[0\.\d\d, 0\.\d\d\] \|", text)  # srpt is oracle-fast, sjf guided-slow
    assert "| 2 | srpt | 6 | 4,000 | 2,600 | 1,400 | 0.65 | 9,400 | +1,400 |" in text
    assert "| 1 | sjf | 0 | 0 | 0 | 0 |  | 8,000 | +0 |" in text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ratios_to_first_gateway_arm"]["baseline"] == "sjf"
    assert summary["resumes"][-1] == {"round": 2, "arm": "srpt", "preemptions": 6, "resume_prompt_tokens": 4000,
                                      "resume_cached_tokens": 2600, "extra_prefill_tokens": 1400,
                                      "engine_prefilled_tokens": 9400.0}  # fmt: skip


def test_a_report_without_gateway_counters_has_no_resume_section(results: Path) -> None:
    text = write_report(results, *load_results(results)).read_text()
    assert "Preemption and resumes" not in text and "the first gateway arm" not in text
