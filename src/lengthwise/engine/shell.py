"""Running the long set-up commands with their output in a log, and showing its tail when they fail."""

from __future__ import annotations

import subprocess
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from lengthwise.engine.errors import EngineError


def tail_lines(path: Path, n: int) -> list[str]:
    """The last `n` lines of a text file (none if it doesn't exist)."""
    if not path.exists():
        return []
    with path.open(errors="replace") as f:
        return [line.rstrip("\n") for line in deque(f, maxlen=n)]


def format_tail(path: Path, n: int = 30) -> str:
    lines = tail_lines(path, n)
    if not lines:
        return f"(the log {path} is empty)"
    return f"Last {len(lines)} lines of {path}:\n" + "\n".join(lines)


def run_logged(
    cmd: Sequence[str | Path], log: Path, what: str, env: Mapping[str, str] | None = None
) -> None:
    """Run `cmd`, appending its output to `log`; on failure raise an EngineError that shows the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        try:
            code = subprocess.run(
                [str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            ).returncode
        except OSError as e:
            raise EngineError(f"Could not {what}: {e}") from e
    if code != 0:
        raise EngineError(f"Could not {what} (exit code {code}).\n{format_tail(log)}")
