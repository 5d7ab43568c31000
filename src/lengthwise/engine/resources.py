"""Checks made before heavy work, so that it fails early with a message instead of half-way."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import psutil

from lengthwise.engine.errors import EngineError

GB = 1024**3


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_disk(path: Path, needed_bytes: int, purpose: str) -> None:
    """Fail unless the file system that will hold `path` has `needed_bytes` free."""
    free = shutil.disk_usage(_existing_parent(path)).free
    if free < needed_bytes:
        raise EngineError(
            f"Not enough disk space to {purpose}: need {needed_bytes / GB:.1f} GB free under "
            f"{_existing_parent(path)}, have {free / GB:.1f} GB. Free some space or set LENGTHWISE_CACHE "
            "to a larger disk."
        )


def require_memory(needed_bytes: int, purpose: str) -> None:
    """Fail unless the machine has `needed_bytes` of memory available (not merely free)."""
    available = psutil.virtual_memory().available
    if available < needed_bytes:
        raise EngineError(
            f"Not enough memory to {purpose}: need {needed_bytes / GB:.1f} GB available, have "
            f"{available / GB:.1f} GB. Stop other engines (`lengthwise engine status`) or programs first."
        )


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (a bind test, as the server will do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
