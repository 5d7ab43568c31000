"""The server manager with stand-in processes: command line, state file, stale pids, start-up failures, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lengthwise.engine import server
from lengthwise.engine.errors import EngineError
from lengthwise.engine.paths import MODEL_NAME, CacheLayout
from lengthwise.engine.resources import free_port

FAKE_SERVER = """
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

print("fake server up", flush=True)
HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


@pytest.fixture
def layout(tmp_path: Path) -> CacheLayout:
    layout = CacheLayout(tmp_path / "cache")
    layout.state.mkdir(parents=True)
    return layout


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[str]]:
    """Replace vLLM by a command the test chooses (default: a tiny server that answers /health)."""
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    command: list[str] = []
    monkeypatch.setattr(server, "setup", lambda layout, progress: tmp_path / "model")
    monkeypatch.setattr(server, "require_memory", lambda *_: None)

    def fake_command(python: Path, model_dir: Path, config: server.EngineConfig) -> list[str]:
        return command or [sys.executable, str(script), str(config.port)]

    monkeypatch.setattr(server, "build_command", fake_command)
    yield command


Spawned = list[subprocess.Popen[bytes]]


@pytest.fixture
def spawned() -> Iterator[Spawned]:
    procs: Spawned = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def spawn_tree(
    layout: CacheLayout, config: server.EngineConfig, shell: str, spawned: Spawned
) -> server.EngineHandle:
    """A real process tree recorded in a state file, as `start` would leave it."""
    proc = subprocess.Popen(["bash", "-c", shell], start_new_session=True)
    spawned.append(proc)
    handle = server.EngineHandle(
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        config=config,
        log=layout.server_log(config.port),
    )
    layout.state_file(config.port).write_text(handle.to_json())
    time.sleep(0.3)  # let bash start its children
    return handle


def test_command_line_has_the_required_flags() -> None:
    config = server.EngineConfig(port=8123, policy="fcfs", max_num_seqs=2, extra_args=("--seed", "1"))
    cmd = server.build_command(Path("/venv/bin/python"), Path("/models/m"), config)
    assert cmd[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    line = " ".join(cmd)
    for flag in (
        "--model /models/m", f"--served-model-name {MODEL_NAME}", "--host 127.0.0.1", "--port 8123",
        "--scheduling-policy fcfs", "--enable-prefix-caching", "--enable-prompt-tokens-details",
        "--enforce-eager", "--kv-cache-memory-bytes 1G", "--max-num-seqs 2", "--max-model-len 4096",
    ):  # fmt: skip
        assert flag in line
    assert cmd[-2:] == ["--seed", "1"]  # extra arguments come last, so they can override


def test_environment_is_offline_and_keeps_a_user_thread_binding() -> None:
    env = server.build_env({"PATH": "/bin"})
    assert env["HF_HUB_OFFLINE"] == "1" and env["PATH"] == "/bin"
    assert env["VLLM_CPU_OMP_THREADS_BIND"].startswith("0-")
    assert server.build_env({"VLLM_CPU_OMP_THREADS_BIND": "0"})["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_handle_round_trips_through_json(tmp_path: Path) -> None:
    handle = server.EngineHandle(
        pid=12, create_time=3.5, config=server.EngineConfig(port=9, extra_args=("--x",)), log=tmp_path / "l"
    )
    assert server.EngineHandle.from_json(handle.to_json()) == handle
    assert handle.url == "http://127.0.0.1:9" and handle.base_url == "http://127.0.0.1:9/v1"


def test_a_stale_pid_file_is_removed(layout: CacheLayout) -> None:
    proc = subprocess.Popen(["sleep", "0.1"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.wait()
    config = server.EngineConfig(port=1)
    handle = server.EngineHandle(pid=proc.pid, create_time=create_time, config=config, log=Path("l"))
    layout.state_file(1).write_text(handle.to_json())
    assert server.find(1, layout) is None
    assert not layout.state_file(1).exists()
    assert server.stop(1, layout) == []


def test_a_reused_pid_is_not_taken_for_the_engine(layout: CacheLayout) -> None:
    handle = server.EngineHandle(pid=os.getpid(), create_time=0.0, config=server.EngineConfig(port=2), log=Path("l"))
    layout.state_file(2).write_text(handle.to_json())
    assert server.find(2, layout) is None  # our pid, but another process's start time: never signalled


def test_an_unreadable_state_file_is_removed(layout: CacheLayout) -> None:
    layout.state_file(3).write_text("{not json")
    assert server.find(3, layout) is None
    assert not layout.state_file(3).exists()


def test_stop_ends_the_whole_tree_including_orphans(layout: CacheLayout, spawned: Spawned) -> None:
    # A child, and a grandchild whose parent (the subshell) exits at once: it stays in the process group only.
    handle = spawn_tree(layout, server.EngineConfig(port=4), "sleep 60 & (sleep 61 &); wait", spawned)
    group = [p for p in psutil.process_iter() if server._pgid(p.pid) == handle.pid and p.name() == "sleep"]
    assert len(group) == 2
    assert server.find_all(layout) == [handle]
    stopped = server.stop(4, layout)
    assert {handle.pid, *(p.pid for p in group)} <= set(stopped)
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in stopped)
    assert not layout.state_file(4).exists()


def test_stop_kills_what_ignores_sigterm(layout: CacheLayout, spawned: Spawned) -> None:
    handle = spawn_tree(layout, server.EngineConfig(port=5), "trap '' TERM; sleep 60 & wait", spawned)
    started = time.monotonic()
    server.stop(5, layout, timeout=0.5)
    assert not psutil.pid_exists(handle.pid)
    assert time.monotonic() - started < 15


def test_start_refuses_a_busy_port(layout: CacheLayout) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(EngineError, match=f"Port {port} .* is in use"):
            server.start(server.EngineConfig(port=port), layout)


def test_start_waits_for_health_then_stop_frees_the_port(layout: CacheLayout, fake_engine: list[str]) -> None:
    config = server.EngineConfig(port=free_port(), max_num_seqs=2)
    handle = server.start(config, layout, timeout=30)
    assert server.is_healthy(handle.url)
    assert server.find(config.port, layout) == handle
    assert "fake server up" in handle.log.read_text()
    assert server.start(config, layout) == handle  # idempotent: the running engine is reused
    with pytest.raises(EngineError, match="other settings"):
        server.start(server.EngineConfig(port=config.port, policy="fcfs"), layout)
    server.stop(config.port, layout)
    assert not server.is_healthy(handle.url)
    assert server.find(config.port, layout) is None


def test_a_server_dying_during_start_shows_its_last_log_lines(layout: CacheLayout, fake_engine: list[str]) -> None:
    fake_engine += ["bash", "-c", "for i in $(seq 40); do echo line $i; done; exit 3"]
    port = free_port()
    with pytest.raises(EngineError, match="exited during start-up") as info:
        server.start(server.EngineConfig(port=port), layout, timeout=30)
    message = str(info.value)
    assert "line 40" in message and "line 11" in message and "line 10\n" not in message  # the last 30 lines
    assert not layout.state_file(port).exists()


def test_a_server_that_never_gets_healthy_is_stopped(layout: CacheLayout, fake_engine: list[str]) -> None:
    fake_engine += ["sleep", "60"]
    port = free_port()
    with pytest.raises(EngineError, match="not healthy after 1 s"):
        server.start(server.EngineConfig(port=port), layout, timeout=1)
    assert server.find(port, layout) is None


@pytest.mark.parametrize(("text", "cores"), [("1", {1}), ("1-3", {1, 2, 3}), ("0,2-3", {0, 2, 3})])
def test_cpu_lists_parse_as_the_kernel_writes_them(text: str, cores: set[int]) -> None:
    assert server.parse_cpu_list(text) == cores


def test_a_bad_cpu_list_is_refused_with_an_example() -> None:
    with pytest.raises(ValueError, match="e.g. 1, 1-3"):
        server.parse_cpu_list("1-x")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning apart needs two cores")
def test_the_engine_core_gets_the_model_cores_and_the_server_the_rest(tmp_path: Path) -> None:
    # A server process with a child (vLLM's API server and its engine core), each with a second thread.
    script = ("import subprocess, sys, threading, time\n"
              "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import threading, time; "
              "threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); time.sleep(60)'])\n"
              "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        while not psutil.Process(proc.pid).children():
            time.sleep(0.05)
        time.sleep(0.3)  # the threads have started
        handle = server.EngineHandle(proc.pid, psutil.Process(proc.pid).create_time(), server.EngineConfig(), tmp_path / "log")
        model = frozenset({max(os.sched_getaffinity(0))})
        message = server.pin_engine(handle, model)
        child = psutil.Process(proc.pid).children()[0]
        for pid, cores in ((child.pid, model), (proc.pid, frozenset(os.sched_getaffinity(0)) - model)):
            threads = os.listdir(f"/proc/{pid}/task")
            assert len(threads) >= 2 and all(os.sched_getaffinity(int(t)) == cores for t in threads), message
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
