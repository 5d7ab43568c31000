"""Where lengthwise keeps what it builds or downloads on this machine: one root, moved by LENGTHWISE_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LENGTHWISE_CACHE``, else ``~/.cache/lengthwise``; read at each call, so a test or a shell can move it."""
    env = os.environ.get("LENGTHWISE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lengthwise"
