import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lengthwise.core.records import (
    RequestRecord,
    jain_index,
    load_records,
    parse_goodput,
    save_records,
    summarize,
    summarize_by_bucket,
)


def _rec(i: int, arrival: float, ttft: float, e2el: float, out: int, **kw: object) -> RequestRecord:
    return RequestRecord(
        id=f"r{i}", arrival=arrival, first_token_time=arrival + ttft, finish_time=arrival + e2el,
        prompt_tokens=10, output_tokens=out, **kw,
    )  # fmt: skip


def test_vllm_definitions_of_ttft_tpot_e2el_and_throughput() -> None:
    recs = [_rec(0, 0.0, 0.1, 1.1, 11), _rec(1, 1.0, 0.3, 0.3, 1), _rec(2, 2.0, 0.2, 2.2, 21)]
    m = summarize(recs)
    assert m["completed"] == 3 and m["failed"] == 0
    assert m["duration_s"] == pytest.approx(4.2)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_e2el_ms"] == pytest.approx(1100.0)
    # TPOT only over multi-token answers: (1.0/10, 2.0/20) -> 100 ms each.
    assert m["mean_tpot_ms"] == pytest.approx(100.0)
    assert m["request_throughput"] == pytest.approx(3 / 4.2)
    assert m["output_throughput"] == pytest.approx(33 / 4.2)
    assert m["total_token_throughput"] == pytest.approx(63 / 4.2)


def test_goodput_counts_requests_meeting_every_slo() -> None:
    recs = [_rec(0, 0.0, 0.1, 1.1, 11), _rec(1, 0.0, 0.3, 0.3, 1), _rec(2, 0.0, 0.2, 4.2, 21)]
    m = summarize(recs, goodput=["ttft:250", "e2el:2000"], duration_s=10.0)
    # r0 is good; r1 misses TTFT; r2 misses E2E.
    assert m["request_goodput"] == pytest.approx(0.1)
    # single-token answers have TPOT 0, so they always meet a TPOT SLO.
    assert summarize(recs, goodput="tpot:1", duration_s=1.0)["request_goodput"] == pytest.approx(1.0)


@pytest.mark.parametrize("bad", ["ttft", "foo:3", "ttft:abc", "tpot:-1"])
def test_parse_goodput_rejects_bad_specs(bad: str) -> None:
    with pytest.raises(ValueError, match="goodput"):
        parse_goodput([bad])


def test_failed_requests_count_only_as_failed() -> None:
    recs = [_rec(0, 0.0, 0.1, 1.1, 11), RequestRecord(id="x", arrival=0.5, error="HTTP 500")]
    m = summarize(recs)
    assert m["completed"] == 1 and m["failed"] == 1
    assert m["mean_e2el_ms"] == pytest.approx(1100.0)


def test_itl_is_pooled_and_wait_prefers_admission_time() -> None:
    recs = [
        _rec(0, 0.0, 0.5, 0.9, 3, itl=[0.2, 0.2], scheduled_time=0.3),
        _rec(1, 0.0, 0.1, 0.4, 2, itl=[0.3]),
    ]
    m = summarize(recs)
    assert m["mean_itl_ms"] == pytest.approx(700 / 3)
    assert m["max_wait_ms"] == pytest.approx(300.0)
    assert RequestRecord.itl_from_token_times([1.0, 1.5, 1.75]) == [0.5, 0.25]


def test_slowdown_fairness_and_longest_tail() -> None:
    recs = [_rec(i, float(i), 0.1, 2.0 * (i + 1), 10 * (i + 1), ideal_s=float(i + 1)) for i in range(20)]
    m = summarize(recs)
    assert m["mean_slowdown"] == pytest.approx(2.0)
    assert m["jain_fairness"] == pytest.approx(1.0)
    # the longest 10% are r18 and r19 (E2E 38 s and 40 s).
    assert 38_000 <= m["p99_e2el_longest10_ms"] <= 40_000


@given(st.lists(st.floats(min_value=0.01, max_value=1e3), min_size=1, max_size=50))
def test_jain_index_is_between_one_over_n_and_one(xs: list[float]) -> None:
    j = jain_index(xs)
    assert 1 / len(xs) - 1e-9 <= j <= 1 + 1e-9


def test_buckets_partition_the_completed_requests() -> None:
    recs = [_rec(i, 0.0, 0.1, 1.0, out) for i, out in enumerate([1, 63, 64, 200, 700, 1000, 5000])]
    by = summarize_by_bucket(recs)
    assert list(by) == ["0-63", "64-127", "128-255", "512-1023", "1024+"]
    assert sum(b["completed"] for b in by.values()) == len(recs)
    assert math.isclose(sum(b["output_throughput"] for b in by.values()), summarize(recs)["output_throughput"])


def test_records_round_trip_as_jsonl_and_json_list(tmp_path: Path) -> None:
    recs = [_rec(0, 0.0, 0.1, 1.1, 11, itl=[0.1] * 10, cached_tokens=0), RequestRecord(id="e", arrival=1, error="x")]
    save_records(recs, tmp_path / "r.jsonl")
    assert load_records(tmp_path / "r.jsonl") == recs
    (tmp_path / "r.json").write_text('{"records": [{"id": "a", "arrival": 0, "new_field": 1}]}')
    assert load_records(tmp_path / "r.json") == [RequestRecord(id="a", arrival=0)]


def test_slowdown_without_an_ideal_is_e2e_over_prefill_plus_own_decode() -> None:
    # r0 ran at once (TTFT 1 s = the prefill), r1 waited 9 s before the same 1 s prefill; both decoded for 4 s.
    recs = [_rec(0, 0.0, 1.0, 5.0, 10), _rec(1, 0.0, 10.0, 14.0, 10)]
    m = summarize(recs)
    assert m["p50_slowdown"] == pytest.approx((1.0 + 14.0 / 5.0) / 2)
    assert summarize(recs, prefill_s=0.5)["mean_slowdown"] == pytest.approx((5.0 / 4.5 + 14.0 / 4.5) / 2)


def test_the_longest_prompts_have_their_own_tail() -> None:
    recs = [RequestRecord(id=f"r{i}", arrival=0.0, first_token_time=0.1, finish_time=float(i + 1),
                          prompt_tokens=1000 - i, output_tokens=i + 1) for i in range(20)]  # fmt: skip
    m = summarize(recs)
    assert 19_000 <= m["p99_e2el_longest10_ms"] <= 20_000  # the longest answers finished last
    assert 1_000 <= m["p99_e2el_longest10_prompt_ms"] <= 2_000  # the longest prompts finished first
