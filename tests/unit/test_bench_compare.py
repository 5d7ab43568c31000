"""`lengthwise bench compare` end to end against the stub engine, with a real gateway subprocess."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from lengthwise.bench.compare import interleaved, standard_arms
from lengthwise.bench.runfile import load_run
from lengthwise.bench.services import free_port, running_server
from lengthwise.cli import app


def test_rounds_alternate_order() -> None:
    arms = standard_arms(["self", "constant:tokens=9"])
    assert [a.name for a in arms] == ["fcfs", "guided", "guided:constant:tokens=9", "oracle"]
    orders = [[a.name for a in order] for order in interleaved(arms, 3)]
    assert orders[0] == orders[2] == ["fcfs", "guided", "guided:constant:tokens=9", "oracle"]
    assert orders[1] == list(reversed(orders[0]))


def test_compare_runs_every_arm_and_writes_the_report(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i} " * (i + 1)}) + "\n" for i in range(6)))
    port = free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(port), "--token-interval-ms", "2"]
    out = tmp_path / "out"
    with running_server(stub, f"http://127.0.0.1:{port}", tmp_path / "stub.log", start_timeout_s=60) as url:
        result = CliRunner().invoke(
            app,
            ["bench", "compare", "--url", url, "--workload", str(prompts), "--n", "6", "--max-tokens", "8",
             "--rounds", "2", "--load", "0.8", "--predictor", "constant:tokens=5", "--out", str(out)],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "comparison.json").read_text())
    assert meta["run_order"] == [
        "round1-fcfs", "round1-guided", "round1-oracle", "round2-oracle", "round2-guided", "round2-fcfs",
    ]  # fmt: skip
    assert 0.79 < meta["load"] < 0.81
    guided = load_run(out / "runs" / "round1-guided.json")
    assert all(r.ok and r.predicted_tokens == 5.0 and r.output_tokens == 8 for r in guided.records)
    assert {r.predictor for r in guided.records} == {"constant"}
    fcfs = load_run(out / "runs" / "round1-fcfs.json")
    assert all(r.ok and r.predicted_tokens is None and r.predictor is None for r in fcfs.records)
    assert [r.id for r in fcfs.records] == [r.id for r in guided.records]
    for name in ("report.md", "summary.json", "e2e_cdf.png", "predicted_vs_actual.png", "calibration.json", "plan.json"):
        assert (out / name).exists(), name
    assert "guided / fcfs mean E2E" in result.output
