"""Benchmark prompts: dev prompts come from the head of the split, which no shipped model was trained on."""

import pytest

from lengthwise.bench import prompts
from lengthwise.workload import sharegpt
from lengthwise.workload.sharegpt import BENCH_RECORDS, Prompt


def _fake_split(monkeypatch: pytest.MonkeyPatch, indices: range) -> None:
    pool = [Prompt(f"id{i}", i, f"prompt {i}", "") for i in indices]
    monkeypatch.setattr(sharegpt, "load_sharegpt", lambda split, limit=None, max_prompt_tokens=None: pool[:limit])


def test_dev_prompts_are_drawn_below_the_labelled_records(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_split(monkeypatch, range(0, 3 * BENCH_RECORDS, 2))
    drawn = prompts.load_prompts("sharegpt", 200, seed=1)
    assert len(drawn) == len(set(drawn)) == 200
    assert all(int(text.split()[1]) < BENCH_RECORDS for text in drawn)


def test_too_few_unlabelled_prompts_is_an_error_that_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_split(monkeypatch, range(BENCH_RECORDS - 5, 3 * BENCH_RECORDS))
    with pytest.raises(ValueError, match=f"only 5 ShareGPT dev prompts .* first {BENCH_RECORDS} records"):
        prompts.load_prompts("sharegpt", 10)
