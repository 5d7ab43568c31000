"""`lengthwise bench compare` end to end against the stub engine, with a real gateway subprocess."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from lengthwise.bench.compare import (
    DEFAULT_GATEWAY_ARGS,
    Arm,
    custom_arms,
    default_gateway_args,
    interleaved,
    parse_arm,
    standard_arms,
)
from lengthwise.bench.runfile import load_run
from lengthwise.bench.services import free_port, running_server
from lengthwise.cli import app


def test_rounds_alternate_order() -> None:
    arms = standard_arms(["self", "constant:tokens=9"])
    assert [a.name for a in arms] == ["fcfs", "guided", "guided:constant:tokens=9", "oracle"]
    orders = [[a.name for a in order] for order in interleaved(arms, 3)]
    assert orders[0] == ["fcfs", "guided", "guided:constant:tokens=9", "oracle"]
    assert orders[1] == list(reversed(orders[0]))
    assert orders[2] == ["guided", "guided:constant:tokens=9", "oracle", "fcfs"]  # turned by one


def test_the_guided_arm_knows_the_embedded_engines_seats() -> None:
    # with the seats known, a request with a free seat goes at once and self-queries run only then
    assert default_gateway_args(8) == (*DEFAULT_GATEWAY_ARGS, "--backend-seats", "8")
    assert default_gateway_args(None) == DEFAULT_GATEWAY_ARGS  # someone else's engine: unknown


def test_six_rounds_of_three_arms_balance_positions_and_neighbours() -> None:
    orders = ["".join(a.name for a in order) for order in interleaved([Arm("A"), Arm("B"), Arm("C")], 6)]
    assert orders == ["ABC", "CBA", "BCA", "ACB", "CAB", "BAC"]
    assert all(Counter(order[pos] for order in orders) == {"A": 2, "B": 2, "C": 2} for pos in range(3))
    follows = Counter(order[i : i + 2] for order in orders for i in range(2))
    assert set(follows.values()) == {2} and len(follows) == 6  # each arm follows each other twice


def compare_on_the_stub(tmp_path: Path, n: int, args: list[str]) -> Result:
    """`bench compare` of `n` made-up prompts against the stub engine (8-token answers), into tmp_path/out."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i} " * (i + 1)}) + "\n" for i in range(n)))
    port = free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(port), "--token-interval-ms", "2"]
    with running_server(stub, f"http://127.0.0.1:{port}", tmp_path / "stub.log", start_timeout_s=60) as url:
        return CliRunner().invoke(
            app,
            ["bench", "compare", "--url", url, "--workload", str(prompts), "--n", str(n), "--max-tokens", "8",
             "--out", str(tmp_path / "out"), *args],
        )  # fmt: skip


def test_compare_runs_every_arm_per_scenario_and_writes_the_reports(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = compare_on_the_stub(tmp_path, 6, [
        "--rounds", "2", "--load", "0.8", "--predictor", "constant:tokens=5",
        "--arrivals", "burst", "--arrivals", "poisson", "--budget-minutes", "10"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "budget: " in result.output and "6 prompts" in result.output  # the stub is fast: every prompt fits
    poisson = out / "poisson-load0.8"
    meta = json.loads((poisson / "comparison.json").read_text())
    assert meta["run_order"] == [
        "round1-fcfs", "round1-guided", "round1-oracle", "round2-oracle", "round2-guided", "round2-fcfs",
    ]  # fmt: skip
    assert meta["scenario"] == "poisson-load0.8" and 0.79 < meta["load"] < 0.81
    guided = load_run(poisson / "runs" / "round1-guided.json")
    assert all(r.ok and r.predicted_tokens == 5.0 and r.output_tokens == 8 for r in guided.records)
    assert {r.predictor for r in guided.records} == {"constant"}
    fcfs = load_run(poisson / "runs" / "round1-fcfs.json")
    assert all(r.ok and r.predicted_tokens is None and r.predictor is None for r in fcfs.records)
    assert [r.id for r in fcfs.records] == [r.id for r in guided.records]
    assert fcfs.config["engine_metrics"] == {"vllm:generation_tokens_total": 6 * 8}  # the stub's counter, read around the run
    for name in ("report.md", "summary.json", "e2e_cdf.png", "predicted_vs_actual.png", "plan.json"):
        assert (poisson / name).exists(), name
    assert (out / "calibration.json").exists()
    burst = out / "burst"
    assert json.loads((burst / "comparison.json").read_text())["arrivals"].startswith("burst")
    assert {r["arrival_s"] for r in json.loads((burst / "plan.json").read_text())} == {0.0}
    assert (burst / "report.md").read_text().startswith("# lengthwise: FCFS vs LLM-guided vs oracle — burst")
    assert "guided / fcfs mean E2E" in result.output and "× [" in result.output
    assert "round1-fcfs: engine " in result.output  # the engine's speed beside each run


def test_report_rebuilds_every_scenario_under_a_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "report", str(tmp_path)])
    assert result.exit_code == 1 and "no comparison.json" in result.output


def test_arm_specs_become_gateway_arms_between_fcfs_and_oracle() -> None:
    arms = custom_arms(["sjf=--mode queue --policy sjf", "srpt=--mode queue --preempt 'margin=2,max=1'"])
    assert [a.name for a in arms] == ["fcfs", "sjf", "srpt", "oracle"]
    assert arms[1].gateway_args == ("--mode", "queue", "--policy", "sjf")
    assert arms[2].gateway_args == ("--mode", "queue", "--preempt", "margin=2,max=1")  # split as a shell would
    assert parse_arm(" a.b+c = --x").name == "a.b+c"


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["sjf --mode queue"], "give NAME=GATEWAY ARGS"),
        (["=--mode queue"], "a name of letters"),
        (["a/b=--mode queue"], "a name of letters"),
        (["fcfs=--mode queue"], "fcfs and oracle are the comparison's own arms"),
        (["oracle=--mode queue"], "fcfs and oracle are the comparison's own arms"),
        (["sjf=  "], "no gateway arguments"),
        (["sjf=--preempt 'margin=2"], "No closing quotation"),
        (["sjf=--mode queue", "sjf=--mode both"], "sjf given more than once"),
    ],
)
def test_bad_arm_specs_are_clear_errors(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        custom_arms(specs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arm", "sjf=--mode queue", "--predictor", "self"], "use it without --predictor"),
        (["--arm", "fcfs=--mode queue"], "fcfs and oracle"),
    ],
)
def test_compare_refuses_bad_arms_before_starting_anything(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["bench", "compare", "--url", "http://127.0.0.1:9", *args])
    unboxed = " ".join(result.output.replace("│", " ").split())  # rich wraps the error in a box
    assert result.exit_code == 2 and message in unboxed


def test_arms_with_their_own_gateway_arguments_save_the_gateway_counters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = compare_on_the_stub(tmp_path, 4, [
        "--arrivals", "burst", "--no-oracle",
        "--arm", "prio=--engine vllm --mode priority --predictor constant:tokens=5",
        "--arm", "queue=--engine vllm --mode queue --max-inflight 2 --predictor constant:tokens=5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "burst" / "comparison.json").read_text())
    assert meta["run_order"] == ["round1-fcfs", "round1-prio", "round1-queue"]
    assert meta["arms"]["queue"].endswith("--mode queue --max-inflight 2 --predictor constant:tokens=5")
    queue = load_run(out / "burst" / "runs" / "round1-queue.json")
    assert queue.config["gateway_metrics"]["lengthwise_preemptions_total"] == 0  # no --preempt
    assert "gateway_metrics" not in load_run(out / "burst" / "runs" / "round1-fcfs.json").config
    report = (out / "burst" / "report.md").read_text()
    assert "## Relative to prio, the first gateway arm" in report and "| queue | " in report
    assert "## Preemption and resumes (each gateway run)" in report and "| 1 | queue | 0 | 0 | 0 | 0 |" in report
