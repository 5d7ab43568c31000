"""Serving an ASGI app with uvicorn: in the foreground (the CLI) or inside a running loop (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn


def _config(app: Any, host: str, port: int, **options: Any) -> uvicorn.Config:
    options.setdefault("log_level", "warning")
    options.setdefault("access_log", False)
    # httptools + uvloop: the fastest parser and loop uvicorn[standard] ships.
    options.setdefault("http", "httptools")
    options.setdefault("loop", "uvloop")
    options.setdefault("proxy_headers", False)  # X-Forwarded-* rewriting: not needed, and costs per request
    return uvicorn.Config(app, host=host, port=port, **options)


def run(app: Any, host: str, port: int, **options: Any) -> None:
    """Serve until interrupted (blocks; uvicorn owns the event loop).

    The port is bound before the app starts: a port in use fails at once, before the app
    has started anything or said it is ready."""
    config = _config(app, host, port, **options)
    socket = config.bind_socket()  # logs the error and exits when the port is taken
    uvicorn.Server(config).run(sockets=[socket])


@contextlib.asynccontextmanager
async def serving(app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any) -> AsyncIterator[str]:
    """Serve `app` in the current event loop; yields its base URL (port 0 picks a free one)."""
    server = uvicorn.Server(_config(app, host, port, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # start-up failed: raise its error
            raise RuntimeError(f"server on {host}:{port} stopped during start-up")
        await asyncio.sleep(0.005)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        await task
