"""`lengthwise bench` against the real engine: a tiny run completes with every record filled."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lengthwise.bench.runfile import load_run
from lengthwise.cli import app

pytestmark = pytest.mark.integration


def test_tiny_bench_run_fills_every_record(engine, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = CliRunner().invoke(
        app,
        ["bench", "--url", engine.url, "--model", engine.model, "--n", "4", "--rate", "4",
         "--max-tokens", "8", "--max-prompt-tokens", "200", "--goodput", "e2el:600000", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Serving Benchmark Result" in result.output and "Successful requests:" in result.output
    run = load_run(out)
    assert len(run.records) == 4 and run.config["model"] == engine.model
    for rec in run.records:
        assert rec.ok, rec.error
        assert 0 < rec.ttft <= rec.e2el
        assert rec.prompt_tokens > 0 and 1 <= rec.output_tokens <= 8
        assert rec.itl is not None and len(rec.itl) <= rec.output_tokens - 1
        assert rec.cached_tokens is not None
    assert run.config["summary"]["completed"] == 4


def test_tiny_compare_runs_every_arm_through_the_default_gateway(engine, tmp_path: Path) -> None:
    """The demo's path end to end: calibration, FCFS, the gateway with its default predictor, oracle."""
    out = tmp_path / "compare"
    result = CliRunner().invoke(
        app,
        ["bench", "compare", "--url", engine.url, "--model", engine.model, "--n", "4", "--max-tokens", "8",
         "--max-prompt-tokens", "200", "--load", "0.9", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scenario = out / "poisson-load0.9"  # one folder per arrival scenario
    runs = {p.stem: load_run(p) for p in (scenario / "runs").glob("*.json")}
    assert set(runs) == {"round1-fcfs", "round1-guided", "round1-oracle"}
    for label, run in runs.items():
        assert [r.ok for r in run.records] == [True] * 4, (label, [r.error for r in run.records])
    assert all(r.predicted_tokens is not None for r in runs["round1-guided"].records)
    assert "auto" in " ".join(runs["round1-guided"].config["gateway_args"])
    assert (scenario / "report.md").exists() and (scenario / "e2e_cdf.png").exists()
