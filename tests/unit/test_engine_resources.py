"""Pre-flight checks: port in use, memory, and the log tail shown when a step fails."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from lengthwise.engine import resources
from lengthwise.engine.errors import EngineError
from lengthwise.engine.shell import run_logged, tail_lines


def test_port_in_use_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert resources.port_in_use("127.0.0.1", port)
    assert not resources.port_in_use("127.0.0.1", resources.free_port())


def test_low_memory_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources.psutil, "virtual_memory", lambda: type("M", (), {"available": 2 * resources.GB})())
    with pytest.raises(EngineError, match=r"need 7\.0 GB available, have 2\.0 GB"):
        resources.require_memory(7 * resources.GB, "start the engine")


def test_a_failed_step_shows_the_tail_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "install.log"
    script = "for i in range(50): print('pip says', i)\nraise SystemExit(2)"
    with pytest.raises(EngineError, match=r"Could not install it \(exit code 2\)") as info:
        run_logged([sys.executable, "-c", script], log, "install it")
    assert "pip says 49" in str(info.value) and "pip says 19\n" not in str(info.value)
    assert tail_lines(log, 1) == ["pip says 49"]


def test_a_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="Could not run it"):
        run_logged(["/nonexistent/program"], tmp_path / "log", "run it")
