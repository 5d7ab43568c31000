"""Traces in: CSV and JSONL logs under the usual column names, a column mapping, clear errors, tiling."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lengthwise.bench.loadgen import Target, request_body
from lengthwise.bench.plan import run_plan
from lengthwise.cli import app
from lengthwise.core.tokens import count_tokens
from lengthwise.core.records import RequestRecord, save_records
from lengthwise.sim.experiment import build_workload
from lengthwise.workload.arrivals import mean_rate
from lengthwise.workload.synthetic import WORDS
from lengthwise.workload.trace import load_trace, trace_from_spec

DATA = Path(__file__).parents[1] / "data"
AZURE_STYLE = DATA / "azure_style_trace.csv"
runner = CliRunner()


def test_an_azure_trace_with_absolute_timestamps_reads_as_offsets_in_seconds() -> None:
    trace = load_trace(AZURE_STYLE)
    assert len(trace) == 40
    assert trace.arrival[0] == 0 and np.all(np.diff(trace.arrival) >= 0)
    assert trace.arrival[1] == pytest.approx(0.797861)  # 18:15:46.7978610 - 18:15:46.0000000
    assert trace.prompt_tokens[:3].tolist() == [2213, 1118, 61]
    assert trace.output_tokens[:3].tolist() == [200, 144, 69]
    assert trace.texts is None


def test_vllm_benchmark_style_jsonl_reads_with_its_own_names(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    rows = [{"timestamp": 3000, "input_length": 10, "output_length": 0}, {"timestamp": 1000, "input_length": 5, "output_length": 7}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    trace = trace_from_spec(f"{path},time_unit=ms")
    assert trace.arrival.tolist() == [0.0, 2.0]  # sorted, from 0, in seconds
    assert trace.prompt_tokens.tolist() == [5, 10]
    assert trace.output_tokens.tolist() == [7, 1]  # a zero-token answer counts as one token
    (tmp_path / "v.jsonl").write_text(json.dumps({"arrival_time": 0.5, "input_len": 3, "output_len": 4}) + "\n")
    assert load_trace(tmp_path / "v.jsonl").output_tokens.tolist() == [4]


def test_a_column_mapping_names_what_the_aliases_miss(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("ts;in;out\n2;30;4\n1;20;3\n")
    trace = trace_from_spec(f"{path},arrival=ts,prompt=in,output=out")
    assert trace.arrival.tolist() == [0.0, 1.0] and trace.prompt_tokens.tolist() == [20, 30]
    burst = tmp_path / "burstgpt.csv"
    burst.write_text("Timestamp,Model,Request tokens,Response tokens\n5,ChatGPT,100,20\n")
    assert load_trace(burst).prompt_tokens.tolist() == [100]


def test_a_missing_column_is_named_with_the_columns_found(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,prompt_tokens,answer\n1,2,3\n")
    with pytest.raises(ValueError, match=r"no arrival column .*columns found: when, prompt_tokens, answer"):
        load_trace(path)
    with pytest.raises(ValueError, match=r"no output column \(looked for the column 'nope' given\)"):
        trace_from_spec(f"{path},arrival=when,output=nope")
    with pytest.raises(ValueError, match="unknown option 'colour'"):
        trace_from_spec(f"{path},colour=red")
    path.write_text("arrival,prompt_tokens,output_tokens\n1,2,3\n2,x,3\n")
    with pytest.raises(ValueError, match=r"row 2, column 'prompt_tokens': cannot read 'x'"):
        load_trace(path)


def test_a_prompt_column_holds_text_or_a_count(tmp_path: Path) -> None:
    path = tmp_path / "text.jsonl"
    path.write_text(json.dumps({"arrival": 0, "prompt": "one two three four", "output_tokens": 9}) + "\n")
    trace = load_trace(path)
    assert trace.texts == ("one two three four",) and trace.prompt_tokens.tolist() == [4]
    quoted = tmp_path / "quoted.csv"
    quoted.write_text('arrival,prompt,output_tokens\n0,"Hello, world; and you?",5\n')
    assert load_trace(quoted).texts == ("Hello, world; and you?",)
    counts = tmp_path / "counts.csv"
    counts.write_text("time,prompt,output\n0,120,9\n")
    trace = load_trace(counts)
    assert trace.texts is None and trace.prompt_tokens.tolist() == [120] and trace.output_tokens.tolist() == [9]


def test_n_tiles_a_trace_in_time_instead_of_cutting_it() -> None:
    base = build_workload(f"trace:{AZURE_STYLE}", None)
    tiled = build_workload(f"trace:{AZURE_STYLE}", 100)
    assert len(tiled) == 100
    assert np.all(np.diff(tiled.arrival) > 0) and tiled.arrival[40] > base.arrival[-1]
    assert tiled.arrival[41] - tiled.arrival[40] == pytest.approx(base.arrival[1] - base.arrival[0])
    assert tiled.output_tokens[40:80].tolist() == base.output_tokens.tolist()
    assert len(build_workload(f"trace:{AZURE_STYLE}", 10)) == 10
    with_fallback = replace(base, fallback=base.output_tokens * 2.0).tiled(100)
    assert with_fallback.fallback is not None and with_fallback.fallback[40:80].tolist() == (base.output_tokens * 2.0).tolist()


def test_records_without_timings_replay_and_failed_ones_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    save_records(
        [RequestRecord("a", 0.0, prompt_tokens=10, output_tokens=5), RequestRecord("b", 1.0, error="HTTP 500"),
         RequestRecord("c", 2.0, prompt_tokens=20, output_tokens=8)],
        path,
    )  # fmt: skip
    w = build_workload(f"records:{path}", 5)
    assert len(w) == 5 and w.output_tokens.tolist() == [5, 8, 5, 8, 5]
    assert [w.request_id(i) for i in range(5)] == ["a", "c", "a#1", "c#1", "a#2"]
    save_records([RequestRecord("x", 0.0, prompt_tokens=10)], path)
    with pytest.raises(ValueError, match="each request needs arrival, prompt_tokens and output_tokens"):
        build_workload(f"records:{path}", None)


def test_sim_run_reads_a_csv_trace_with_no_conversion(tmp_path: Path) -> None:
    save = tmp_path / "out.json"
    args = ["sim", "run", "--workload", f"trace:{AZURE_STYLE}", "--n", "200", "--max-num-seqs", "4", "--load", "0.9",
            "--policy", "fcfs", "--policy", "sst@oracle", "--save", str(save)]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "200 requests" in result.output and "sst@oracle / fcfs" in result.output
    metrics = json.loads(save.read_text())
    assert metrics["fcfs"]["completed"] == 200 and metrics["sst@oracle"]["completed"] == 200


def test_sim_run_names_the_missing_column_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrival,prompt_tokens\n0,5\n")
    result = runner.invoke(app, ["sim", "run", "--workload", f"trace:{path}"], env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert "no output column" in result.output and "columns found: arrival, prompt_tokens" in result.output


def test_a_bench_plan_replays_a_trace_s_arrivals_and_lengths() -> None:
    trace = load_trace(AZURE_STYLE)
    plan = run_plan(f"trace:{AZURE_STYLE}", None, seed=3)
    assert [r.arrival_s for r in plan] == pytest.approx(trace.arrival.tolist())
    assert [r.max_tokens for r in plan] == trace.output_tokens.tolist() and all(r.ignore_eos for r in plan)
    assert [count_tokens(r.prompt) for r in plan] == trace.prompt_tokens.tolist()
    assert len({r.prompt[:40] for r in plan}) == len(plan)  # no shared prefix to hit the cache
    assert all(count_tokens(w) == 1 == count_tokens(" " + w) for w in WORDS)
    body = request_body(Target("http://x", "m"), plan[0])
    assert body["ignore_eos"] is True and body["max_tokens"] == trace.output_tokens[0]


def test_a_bench_plan_tiles_rescales_caps_and_keeps_a_trace_s_texts(tmp_path: Path) -> None:
    tiled = run_plan(f"trace:{AZURE_STYLE}", 100, rate=2.0, max_tokens=64)
    assert len(tiled) == 100 and max(r.max_tokens for r in tiled) == 64
    assert mean_rate(np.array([r.arrival_s for r in tiled])) == pytest.approx(2.0)
    path = tmp_path / "texts.jsonl"
    path.write_text(json.dumps({"arrival": 1, "prompt": "Say hi", "output_tokens": 3}) + "\n")
    (request,) = run_plan(f"trace:{path}", None)
    assert (request.prompt, request.max_tokens, request.arrival_s) == ("Say hi", 3, 0.0)
    with pytest.raises(ValueError, match="leave out --trace"):
        run_plan(f"trace:{path}", None, arrivals_from=str(path))


def test_bench_arrivals_from_any_trace_format() -> None:
    prompts = DATA / "prompts.jsonl"
    plan = run_plan(str(prompts), 3, arrivals_from=str(AZURE_STYLE), max_tokens=8)
    assert [r.arrival_s for r in plan] == pytest.approx(load_trace(AZURE_STYLE).arrival[:3].tolist())
    assert [r.prompt for r in plan] == ["a", "b", "c"] and {r.ignore_eos for r in plan} == {False}
