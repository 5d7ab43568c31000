"""`lengthwise bench` from the command line: clear errors for bad input, a run against the stub engine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from lengthwise.bench.runfile import load_run
from lengthwise.bench.services import free_port, running_server
from lengthwise.cli import app

runner = CliRunner()


def test_missing_url_and_bad_goodput_are_usage_errors() -> None:
    result = runner.invoke(app, ["bench", "--n", "2"])
    assert result.exit_code == 2 and "--url" in result.output
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "--goodput", "latency:5"])
    assert result.exit_code == 2 and "goodput" in result.output


def test_unknown_workload_is_one_clear_error() -> None:
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "--model", "m", "--workload", "nope"])
    assert result.exit_code == 1 and "unknown workload 'nope'" in result.output


def test_run_against_the_stub_prints_the_table_and_saves_records(tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"hello {i}"}) + "\n" for i in range(5)))
    port = free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(port), "--token-interval-ms", "1"]
    with running_server(stub, f"http://127.0.0.1:{port}", tmp_path / "stub.log", start_timeout_s=60) as url:
        result = runner.invoke(
            app,
            ["bench", "--url", url, "--workload", str(prompts), "--n", "5", "--rate", "50", "--max-tokens", "6",
             "--goodput", "ttft:5000 e2el:10000", "--out", str(tmp_path / "run.json")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Successful requests:                    5" in result.output
    assert "Request goodput (req/s):" in result.output
    run = load_run(tmp_path / "run.json")
    assert run.config["model"] == "stub-model" and run.config["goodput"] == ["ttft:5000", "e2el:10000"]
    assert [r.output_tokens for r in run.records] == [6] * 5 and all(r.ok for r in run.records)


def test_a_trace_replays_its_lengths_against_the_stub(tmp_path: Path) -> None:
    trace = Path(__file__).parents[1] / "data" / "azure_style_trace.csv"
    port = free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(port), "--token-interval-ms", "1"]
    with running_server(stub, f"http://127.0.0.1:{port}", tmp_path / "stub.log", start_timeout_s=60) as url:
        result = runner.invoke(
            app,
            ["bench", "--url", url, "--workload", f"trace:{trace}", "--n", "4", "--rate", "50", "--max-tokens", "100",
             "--out", str(tmp_path / "run.json")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "run.json")
    assert [r.output_tokens for r in run.records] == [100, 100, 69, 21]  # the trace's 200, 144, 69, 21, capped at 100
    assert run.config["n"] == 4 and all(r.ok for r in run.records)
