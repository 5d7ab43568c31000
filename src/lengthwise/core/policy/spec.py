"""Policy specs: one string names a policy, its parameters and its wrappers.

Grammar: ``NAME[:K=V[,K=V...]][+WRAPPER[:K=V[,K=V...]]...]``, e.g. ``sjf``,
``srpt:overrun=0.3``, ``sjf+aging:rate=2``, ``sjf+aging:rate=2,max_wait=30``,
``mlfq:levels=4,base_quantum=8``. Values are numbers, ``inf``, ``none`` or words.
"""

from __future__ import annotations

import math
from typing import Any


def parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("inf", "+inf", "infinity"):
        return math.inf
    try:
        return int(low)
    except ValueError:
        pass
    try:
        return float(low)
    except ValueError:
        return text.strip()


def parse_spec(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """Split a spec into (name, params) parts, base policy first; ValueError if malformed."""
    if not spec or not spec.strip():
        raise ValueError("empty policy spec")
    parts = []
    for part in spec.split("+"):
        name, _, arg_text = part.partition(":")
        name = name.strip().lower()
        if not name:
            raise ValueError(f"policy spec {spec!r}: empty name in {part!r}")
        parts.append((name, parse_params(arg_text, f"policy spec {spec!r}")))
    return parts


def parse_params(text: str, context: str = "spec") -> dict[str, Any]:
    """``K=V,K=V`` into a dict (dashes in keys become underscores); ValueError if malformed."""
    params: dict[str, Any] = {}
    for item in filter(None, (a.strip() for a in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{context}: expected KEY=VALUE, got {item!r}")
        params[key.strip().replace("-", "_")] = parse_value(value)
    return params
