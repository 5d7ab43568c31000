"""The eval pipeline against a fake engine: records, prefix reuse, resume, report."""

import json

import httpx
import pytest

from lengthwise.predict.offline import eval as predict_eval
from lengthwise.predict.calibration import Calibrator
from lengthwise.core.io import read_jsonl
from lengthwise.predict.offline.eval import EvalConfig, done_ids, run_eval
from lengthwise.testing.fake_engine import FakeEngine
from lengthwise.predict.offline.report import accuracy, cross_validated, write_report
from lengthwise.workload.sharegpt import Prompt


@pytest.fixture
def fake_engine(monkeypatch) -> FakeEngine:
    engine = FakeEngine(answer=lambda body: str(10 * (len(body["messages"][0]["content"].split()) % 7 + 1)))
    original = httpx.AsyncClient

    def client(**kwargs) -> httpx.AsyncClient:
        return original(transport=engine.transport(), **kwargs)

    monkeypatch.setattr(predict_eval.httpx, "AsyncClient", client)
    return engine


def prompts(n: int, words: int = 300) -> list[Prompt]:
    return [Prompt(f"p{i}", i, " ".join(f"w{i}_{j}" for j in range(words + i)), "") for i in range(n)]


async def test_records_hold_every_variant_then_the_real_answer(tmp_path, fake_engine) -> None:
    out = tmp_path / "eval.jsonl"
    config = EvalConfig("http://engine", "m", ("seed", "scale"), max_tokens=64, concurrency=2)
    await run_eval(prompts(3), out, config)
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == ["p0", "p1", "p2"]
    record = next(r for r in records if r["id"] == "p1")
    assert set(record["variants"]) == {"seed", "scale"}
    assert sorted(v["order"] for v in record["variants"].values()) == [0, 1]
    assert record["variants"]["scale"]["order"] == 0  # rotated: prompt 1 starts with the 2nd variant
    assert record["actual_tokens"] == 40 and record["max_tokens"] == 64
    assert record["cached_tokens"] == 256  # the real request reused the queries' prefix blocks
    assert record["variants"]["seed"]["summary"]["expect"] > 0
    # queries first, then the real request, per prompt
    paths = [(r["body"].get("stream", False), r["body"]["messages"][0]["content"][:6]) for r in fake_engine.requests]
    assert paths.count((True, "w1_0 w")) == 1


async def test_the_postfix_can_state_another_cap_than_the_real_answers(tmp_path, fake_engine) -> None:
    out = tmp_path / "eval.jsonl"
    config = EvalConfig("http://engine", "m", ("seed",), max_tokens=64, concurrency=1, stated_max_tokens=512)
    await run_eval(prompts(1), out, config)
    [record] = read_jsonl(out)
    assert record["max_tokens"] == 64 and record["stated_max_tokens"] == 512
    query, real = fake_engine.requests
    assert "maximum response length is 512 tokens" in query["body"]["messages"][0]["content"]
    assert real["body"]["max_tokens"] == 64 and real["body"]["stream"]


async def test_resume_skips_done_prompts_and_torn_lines(tmp_path, fake_engine) -> None:
    out = tmp_path / "eval.jsonl"
    config = EvalConfig("http://engine", "m", ("seed",), concurrency=1)
    await run_eval(prompts(2), out, config)
    with out.open("a") as f:
        f.write('{"id": "p9", "tor')
    assert done_ids(out) == {"p0", "p1"}
    fake_engine.requests.clear()
    await run_eval([p for p in prompts(3) if p.id not in done_ids(out)], out, config)
    assert {r["body"]["messages"][0]["content"][:3] for r in fake_engine.requests} == {"w2_"}


async def test_failed_real_request_is_reported_not_written(tmp_path, fake_engine) -> None:
    fake_engine.status = 500
    errors = []
    await run_eval(prompts(1), tmp_path / "e.jsonl", EvalConfig("http://engine", "m", ("seed",)), lambda r, e: errors.append(e))
    assert len(errors) == 1 and read_jsonl(tmp_path / "e.jsonl") == []


def test_accuracy_metrics() -> None:
    perfect = accuracy([1, 2, 3, 4], [10, 20, 30, 40])
    assert perfect["kendall_tau"] == pytest.approx(1.0) and perfect["spearman"] == pytest.approx(1.0)
    assert perfect["mae"] == pytest.approx(22.5) and perfect["within_2x"] == 0.0
    constant = accuracy([5, 5, 5], [4, 6, 20])
    assert constant["kendall_tau"] != constant["kendall_tau"]  # nan: no order
    assert constant["within_2x"] == pytest.approx(2 / 3)


def test_cross_validation_does_not_leak_the_held_out_answer() -> None:
    features = [{"expect": float(i % 13 + 1)} for i in range(60)]
    actual = [3.0 * f["expect"] for f in features]
    before = cross_validated(features, actual, Calibrator, folds=5)
    changed = list(actual)
    changed[7] = 1e5
    after = cross_validated(features, changed, Calibrator, folds=5)
    assert after[7] == before[7]


async def test_report_writes_metrics_and_the_plot(tmp_path, fake_engine) -> None:
    out = tmp_path / "eval.jsonl"
    fake_engine.output_tokens = 30
    await run_eval(prompts(12, words=20), out, EvalConfig("http://engine", "m", ("seed", "scale"), concurrency=4))
    report = write_report(out, tmp_path, folds=3)
    assert (tmp_path / "predict_eval.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["records"] == report["records"] == 12
    names = {row["name"] for row in saved["accuracy"]}
    assert {"seed: greedy", "scale: expect → huber", "prompt length → huber", "constant (median) = FCFS"} <= names
    assert saved["overhead"]["seed"]["queries"] == 12


def test_cli_rejects_unknown_variants(tmp_path) -> None:
    from typer.testing import CliRunner

    from lengthwise.cli import app

    result = CliRunner().invoke(app, ["predict", "eval", "--variants", "seed,bogus", "--out", str(tmp_path / "x.jsonl")])
    assert result.exit_code != 0
    assert "variants must be among" in result.output
