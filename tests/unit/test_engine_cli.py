"""`lengthwise engine ...` as a user sees it: messages and exit codes, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lengthwise.cli import app
from lengthwise.engine.paths import CacheLayout
from lengthwise.engine.resources import free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CacheLayout:
    monkeypatch.setenv("LENGTHWISE_CACHE", str(tmp_path / "cache"))
    return CacheLayout.default()


def test_cache_root_follows_the_environment(cache: CacheLayout, tmp_path: Path) -> None:
    assert cache.root == tmp_path / "cache"
    assert cache.server_log(8001) != cache.server_log(8002)


def test_up_on_a_busy_port_says_so_without_a_traceback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        result = runner.invoke(app, ["engine", "up", "--port", str(sock.getsockname()[1])])
    assert result.exit_code == 1
    assert "is in use by another program" in result.output
    assert "Traceback" not in result.output


def test_a_bad_core_list_is_refused_before_anything_starts() -> None:
    result = runner.invoke(app, ["engine", "up", "--omp-threads-bind", "one"])
    assert result.exit_code == 2 and "not a cpu list" in result.output


def test_down_and_status_with_nothing_running() -> None:
    port = free_port()
    down = runner.invoke(app, ["engine", "down", "--port", str(port)])
    assert down.exit_code == 0 and f"No engine started by lengthwise runs on port {port}" in down.output
    status = runner.invoke(app, ["engine", "status"])
    assert status.exit_code == 0 and "No engine started by lengthwise runs now" in status.output


def test_logs_prints_the_last_lines(cache: CacheLayout) -> None:
    cache.state.mkdir(parents=True)
    cache.server_log(8555).write_text("".join(f"log line {i}\n" for i in range(100)))
    result = runner.invoke(app, ["engine", "logs", "--port", "8555", "-n", "3"])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["log line 97", "log line 98", "log line 99"]


def test_logs_without_a_log_is_a_clear_error() -> None:
    result = runner.invoke(app, ["engine", "logs", "--port", "8556"])
    assert result.exit_code == 1 and "has `lengthwise engine up` run?" in result.output


def test_chat_without_an_engine_is_a_clear_error() -> None:
    result = runner.invoke(app, ["engine", "chat", "hello", "--port", str(free_port())])
    assert result.exit_code == 1 and "Is the engine up?" in result.output


def test_ctrl_c_is_a_message_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("lengthwise.engine.server.setup", interrupted)
    result = runner.invoke(app, ["engine", "setup"])
    assert result.exit_code == 130 and "Interrupted." in result.output
    assert "Traceback" not in result.output
