"""The one exception the engine manager raises for problems a user can fix."""

from __future__ import annotations


class EngineError(RuntimeError):
    """A failure with a message meant for people: the CLI prints it without a traceback."""
