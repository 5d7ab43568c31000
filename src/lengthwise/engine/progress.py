"""Set-up progress for people: printed steps (readable in CI logs) and a spinner on a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from rich.console import Console


class Progress:
    """Reports steps to a rich console, or nowhere (the default for library use and tests)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console

    def step(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"[bold cyan]→[/] {message}")

    @contextmanager
    def waiting(self, message: str) -> Iterator[None]:
        """A spinner while a long call runs (rich draws nothing when the output is not a terminal)."""
        with self.console.status(message) if self.console is not None else nullcontext():
            yield


QUIET = Progress()
