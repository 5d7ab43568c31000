"""The small core helpers: atomic writes, JSON lines, Kendall's tau, the usage object."""

import math
from pathlib import Path

import numpy as np
import pytest

from lengthwise.core.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, write_jsonl
from lengthwise.core.stats import kendall_tau, kendall_tau_ci
from lengthwise.core.usage import cached_tokens


def test_an_atomic_write_replaces_the_file_and_creates_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2}, indent=1)
    assert path.read_text() == '{\n "a": 2\n}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_a_failing_write_keeps_the_old_file_and_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "state.json"
    atomic_write_text(path, "old")

    def torn(self: Path, data: bytes) -> int:
        with open(self, "wb") as f:
            f.write(data[:2])
        raise OSError("no space left on device")

    monkeypatch.setattr(Path, "write_bytes", torn)
    with pytest.raises(OSError, match="no space"):
        atomic_write_text(path, "new content")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_jsonl_round_trip_appends_and_skips_what_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    write_jsonl(path, [{"id": "a", "n": 1}, {"id": "b", "text": "é\nline"}])
    append_jsonl(path, {"id": "c"})
    with path.open("a") as f:
        f.write('\n[1, 2]\n{"id": "torn')  # a blank line, a non-object, a torn last line
    assert read_jsonl(path) == [{"id": "a", "n": 1}, {"id": "b", "text": "é\nline"}, {"id": "c"}]


def test_kendall_tau_matches_hand_computed_cases() -> None:
    # 6 pairs: 5 concordant, 1 discordant (2,3 swapped): (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # Ties: 4 concordant, 0 discordant, one pair tied in x only, one in y only: 4 / sqrt(5 * 5).
    assert kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_kendall_tau_is_nan_when_undefined_and_agrees_with_the_interval() -> None:
    assert math.isnan(kendall_tau([1.0], [2.0]))
    assert math.isnan(kendall_tau([5, 5, 5], [1, 2, 3]))
    x, y = np.random.default_rng(3).normal(size=(2, 40))
    assert kendall_tau_ci(x, y).tau == pytest.approx(kendall_tau(x, y))


def test_cached_tokens_reads_the_usage_details() -> None:
    assert cached_tokens({"prompt_tokens_details": {"cached_tokens": 48}}) == 48
    assert cached_tokens({"prompt_tokens_details": {"cached_tokens": None}}) == 0
    assert cached_tokens({"prompt_tokens_details": None}) is None
    assert cached_tokens({"prompt_tokens": 3}) is None
    assert cached_tokens(None) is None
