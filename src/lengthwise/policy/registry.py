"""Policies by name, for the CLI, the gateway and the simulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lengthwise.policy.base import Policy
from lengthwise.policy.fcfs import FCFS
from lengthwise.policy.sjf import SJF

POLICIES: dict[str, Callable[..., Policy]] = {
    "fcfs": FCFS,
    "sjf": SJF,
}


def make_policy(name: str, **params: Any) -> Policy:
    """Build a policy by name; unknown names raise ValueError listing the known ones."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(sorted(POLICIES))}") from None
    return factory(**params)
