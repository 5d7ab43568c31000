"""The ShareGPT loader on a small synthetic, cut-off file."""

import json

import pytest

from lengthwise.workload import sharegpt
from lengthwise.workload.sharegpt import iter_records, load_sharegpt


def conversation(i: int, first: str = "human") -> dict:
    turns = [{"from": first, "value": f"question {i} " + "word " * i}, {"from": "gpt", "value": f"answer {i}"}]
    if first == "gpt":
        turns.append({"from": "human", "value": f"late question {i}"})
    return {"id": f"c{i}", "conversations": turns}


@pytest.fixture
def cut_off_file(tmp_path, monkeypatch):
    records = [conversation(i) for i in range(6)]
    records[2] = conversation(2, first="gpt")  # human turn comes second, no answer after it
    records[3] = {"id": "c3", "conversations": [{"from": "human", "value": "   "}]}  # no usable turn
    text = "[\n" + ",\n".join(json.dumps(r, indent=2) for r in records)
    text += ',\n  {"id": "c6", "conversations": [{"from": "human", "val'  # the cut
    path = tmp_path / "sharegpt.json"
    path.write_text(text)
    monkeypatch.setattr(sharegpt, "DEV_RECORDS", 4)
    return path


def test_records_are_recovered_up_to_the_cut(cut_off_file) -> None:
    assert [r["id"] for r in iter_records(cut_off_file)] == [f"c{i}" for i in range(6)]


def test_splits_keep_file_order_and_skip_unusable_records(cut_off_file) -> None:
    dev = load_sharegpt("dev", path=cut_off_file)
    assert [(p.id, p.index) for p in dev] == [("c0", 0), ("c1", 1), ("c2", 2)]
    assert dev[1].messages == [{"role": "user", "content": "question 1 word "}]
    assert dev[1].reference == "answer 1"
    assert dev[2].text == "late question 2" and dev[2].reference == ""
    assert [p.id for p in load_sharegpt("test", path=cut_off_file)] == ["c4", "c5"]
    assert len(load_sharegpt("all", path=cut_off_file)) == 5


def test_limit_and_prompt_length_filter(cut_off_file) -> None:
    assert [p.id for p in load_sharegpt("all", limit=2, path=cut_off_file)] == ["c0", "c1"]
    everything = load_sharegpt("all", path=cut_off_file)
    short = load_sharegpt("all", max_prompt_tokens=4, path=cut_off_file)
    assert [p.id for p in short] == [p.id for p in everything if p.prompt_tokens <= 4]
    assert 0 < len(short) < len(everything)
    with pytest.raises(ValueError, match="unknown split"):
        load_sharegpt("train", path=cut_off_file)  # type: ignore[arg-type]


def test_not_an_array(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"id": 1}')
    with pytest.raises(ValueError, match="not a JSON array"):
        list(iter_records(path))
