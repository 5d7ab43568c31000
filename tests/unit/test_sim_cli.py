"""The `lengthwise sim` commands end to end on small inputs, and the validation plumbing."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lengthwise.core.records import save_records
from lengthwise.cli import app
from lengthwise.core.policy import make_policy
from lengthwise.sim.cost import LinearCost
from lengthwise.sim.engine import EngineConfig, Simulator
from lengthwise.sim.validation import compare_to_measured
from lengthwise.sim.workload import Workload

COEF = {"c0": 0.02, "c_token": 1e-4, "c_seq": 1e-3, "c_ctx": 1e-7, "c_pair": 1e-9}
runner = CliRunner()


@pytest.fixture
def measured(tmp_path: Path) -> tuple[Path, Path]:
    """A 'measured' run made by the simulator itself with a known cost model."""
    rng = np.random.default_rng(0)
    n = 40
    out = rng.integers(1, 200, n)
    w = Workload(np.sort(rng.uniform(0, 60, n)), rng.integers(10, 600, n), out, out.astype(float))
    config = EngineConfig(max_num_seqs=4, max_num_batched_tokens=2048, block_size=128, num_blocks=682)
    records = Simulator(config, LinearCost(**COEF), make_policy("fcfs")).run(w).records
    save_records(records, tmp_path / "run.jsonl")
    (tmp_path / "profile.json").write_text(json.dumps({"kind": "linear", "coef": COEF}))
    return tmp_path / "run.jsonl", tmp_path / "profile.json"


def test_replaying_a_run_with_its_own_cost_model_has_no_error(measured: tuple[Path, Path]) -> None:
    run, _ = measured
    config = EngineConfig(max_num_seqs=4, max_num_batched_tokens=2048, block_size=128, num_blocks=682)
    report = compare_to_measured(run, LinearCost(**COEF), config)
    assert report["requests"] == 40
    assert abs(report["mean_e2el_error"]) < 1e-9


def test_sim_validate_prints_the_comparison(measured: tuple[Path, Path]) -> None:
    run, profile = measured
    result = runner.invoke(app, ["sim", "validate", str(run), "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    assert "mean_e2el_ms" in result.output and "+0.0%" in result.output


def test_sim_run_compares_arms_on_a_replayed_workload(measured: tuple[Path, Path], tmp_path: Path) -> None:
    run, profile = measured
    save = tmp_path / "out.json"
    args = ["sim", "run", "--workload", f"records:{run}", "--profile", str(profile), "--rate", "2",
            "--max-num-seqs", "2", "--policy", "fcfs", "--policy", "sjf@oracle", "--predictions", "oracle",
            "--save", str(save)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "sjf@oracle / fcfs" in result.output
    metrics = json.loads(save.read_text())
    assert metrics["sjf@oracle"]["mean_e2el_ms"] < metrics["fcfs"]["mean_e2el_ms"]
    assert (tmp_path / "out-sjf_oracle.jsonl").exists()


def test_sim_run_caps_outputs_at_the_replay_records_longest(measured: tuple[Path, Path], tmp_path: Path) -> None:
    run, profile = measured
    replay = tmp_path / "eval.jsonl"
    replay.write_text("\n".join(json.dumps({"actual": a, "predicted": a}) for a in (5, 20, 50, 50, 50)))
    save = tmp_path / "out.json"
    args = ["sim", "run", "--workload", f"records:{run}", "--profile", str(profile), "--rate", "2",
            "--policy", "fcfs", "--predictions", f"replay:{replay}", "--save", str(save)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "outputs capped at 50 tokens" in result.output
    records = (tmp_path / "out-fcfs.jsonl").read_text().splitlines()
    outputs = [json.loads(line)["output_tokens"] for line in records]
    assert max(outputs) == 50 and len(outputs) == 40


def test_sim_run_models_the_gateways_preemption_on_a_burst(measured: tuple[Path, Path], tmp_path: Path) -> None:
    run, profile = measured
    save = tmp_path / "out.json"
    args = ["sim", "run", "--workload", f"records:{run}", "--profile", str(profile), "--arrivals", "burst",
            "--max-tokens", "100", "--max-num-seqs", "2", "--policy", "srpt", "--predictions", "oracle",
            "--preempt", "margin=1,early=1", "--save", str(save)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "resume share of all prefill" in result.output and "outputs capped at 100 tokens (max_tokens)" in result.output
    saved = json.loads(save.read_text())
    assert saved["config"]["preempt"]["margin"] == 1 and saved["config"]["max_tokens"] == 100
    records = [json.loads(line) for line in (tmp_path / "out-srpt.jsonl").read_text().splitlines()]
    assert {r["arrival"] for r in records} == {0.0} and max(r["output_tokens"] for r in records) == 100


@pytest.mark.parametrize(("extra", "message"), [
    (["--preempt", "marge=2"], "unknown field"),
    (["--preempt", "", "--preemptive"], "choose one preemption"),
])  # fmt: skip
def test_sim_run_rejects_a_bad_preempt_spec_with_one_line(extra: list[str], message: str) -> None:
    result = runner.invoke(app, ["sim", "run", "--rate", "1", *extra])
    assert result.exit_code == 1
    assert message in result.output


def test_sim_run_rejects_a_bad_policy_with_one_line() -> None:
    result = runner.invoke(app, ["sim", "run", "--policy", "lifo", "--rate", "1"])
    assert result.exit_code == 1
    assert "unknown policy 'lifo'" in result.output


def test_sim_os_prints_the_three_charts(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sim", "os", "--out", str(tmp_path / "os.png")])
    assert result.exit_code == 0, result.output
    for line in ("FCFS  (average waiting time 3.5)", "RR  (average waiting time 5.75)", "SRT  (average waiting time 3.25)"):
        assert line in result.output
    assert (tmp_path / "os.png").stat().st_size > 10_000
