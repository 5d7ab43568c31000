"""`lengthwise serve` as a process: it binds before it says it is ready, writes its access log,
keeps credentials out of what it prints, and stops within its graceful-shutdown timeout on
SIGTERM even with a stream that would run for minutes. Loopback only, every wait bounded."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lengthwise.bench.services import free_port, is_healthy, running_server

#: `lengthwise serve` from this checkout, with a predictor that loads nothing.
SERVE = [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--host", "127.0.0.1",
         "--predictor", "constant:tokens=1"]
PASSWORD = "pa55-Qv9SECRET"
#: Far above anything under test: only a process that does not stop reaches it.
HANG_GUARD_S = 60.0


def test_port_in_use_fails_before_the_gateway_says_ready() -> None:
    """The log said "gateway ready" (after the start-up health checks) before the bind error."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*SERVE, "--backend", "http://127.0.0.1:1", "--port", str(port)],
                              capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert done.returncode != 0
    assert "address already in use" in done.stderr.lower(), done.stderr
    assert "gateway ready" not in done.stderr


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not is_healthy(url, timeout_s=1.0):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


def test_access_log_credentials_and_sigterm_with_a_stream_under_way(tmp_path: Path) -> None:
    """`--access-log` wrote nothing; SIGTERM waited for in-flight streams with no upper bound."""
    stub_port, port = free_port(), free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(stub_port),
            "--token-interval-ms", "1000"]  # a 600-token stream takes 10 minutes
    backend = f"http://probe-user:{PASSWORD}@127.0.0.1:{stub_port}"
    url, log = f"http://127.0.0.1:{port}", tmp_path / "gateway.log"
    body = {"model": "stub-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 600, "stream": True}
    with running_server(stub, f"http://127.0.0.1:{stub_port}", tmp_path / "stub.log", start_timeout_s=HANG_GUARD_S):
        with log.open("wb") as out:
            gateway = subprocess.Popen([*SERVE, "--backend", backend, "--port", str(port), "--access-log",
                                        "--graceful-shutdown-timeout", "1"],
                                       stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
        try:
            _wait_healthy(url, gateway, log)
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=HANG_GUARD_S) as stream:
                chunks = stream.iter_raw()  # kept: a dropped iterator closes the stream
                next(chunks)  # the stream is under way
                os.killpg(gateway.pid, signal.SIGTERM)
                gateway.wait(timeout=HANG_GUARD_S)
        finally:
            if gateway.poll() is None:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
    text = log.read_text()
    assert '"GET /health HTTP/1.1" 200' in text, text
    assert "graceful shutdown exceeded" in text, text
    assert PASSWORD not in text and "probe-user" not in text
    assert "http://***@127.0.0.1" in text  # the banner, redacted
