"""A real `redis-server` on a free loopback port, for integration tests, benchmarks and demos.

Debian's `redis-server` package (installed by `make redis`), started without persistence
so that a stopped and restarted server comes back empty, as after a crash:

    with RedisServer() as server:      # server.url == "redis://127.0.0.1:<port>/0"
        ...
        server.stop()                  # Redis goes away mid-run
        server.start()                 # and comes back on the same port
"""

from __future__ import annotations

import shutil
import subprocess
import time
from types import TracebackType

import redis

from lengthwise.engine.resources import free_port

#: Longest wait for a started server to answer PING.
START_TIMEOUT_S = 20.0


class RedisServer:
    """One redis-server process on `port` (a free one by default); a context manager that stops it."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed: run `make redis` (Debian: apt-get install redis-server)")
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and return once it answers PING."""
        self._proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def stop(self) -> None:
        """Kill the server (as a crash would: nothing is saved) and wait for it to exit."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
