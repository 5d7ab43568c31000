"""Where the engine and the client run on the CPU cores during a comparison.

`shared`: the embedded engine's OpenMP threads on every core (its default), the
gateway and the load generator wherever the OS puts them; on a 2-core machine the
client's work then preempts the model's threads. `split`: the engine's threads on
every core but the first (`VLLM_CPU_OMP_THREADS_BIND`), and this process (the load
generator) with the gateways it starts pinned to the first core, so the client
never competes with the model (at the price of the model's use of that core).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

from lengthwise.engine.server import pin_threads

CpuLayout = Literal["shared", "split"]
LAYOUTS: tuple[str, ...] = ("shared", "split")


@dataclass(frozen=True)
class Cores:
    """The client's cores and the engine's OpenMP binding (None: the engine's default) of a layout."""

    client: frozenset[int] | None
    engine_bind: str | None


def usable(layout: CpuLayout) -> CpuLayout:
    """`layout`, or `shared` when it is `split` and this process may use fewer than two cores."""
    return "shared" if layout == "split" and len(os.sched_getaffinity(0)) < 2 else layout


def cores_for(layout: CpuLayout, available: Iterable[int] | None = None) -> Cores:
    """The cores of `layout` among `available` (default: the cores this process may use)."""
    if layout == "shared":
        return Cores(None, None)
    cores = sorted(os.sched_getaffinity(0) if available is None else available)
    if len(cores) < 2:
        raise ValueError(f"--cpu-layout split needs two cores; this process may use only {cores}")
    return Cores(frozenset(cores[:1]), ",".join(map(str, cores[1:])))


def pin_this_process(cores: Cores) -> None:
    """Keep every thread of this process, and the processes it starts from now on, on the client's cores."""
    if cores.client is not None:
        pin_threads(os.getpid(), cores.client)


@contextmanager
def pinned(cores: Cores) -> Iterator[None]:
    """`pin_this_process(cores)` for the block, then every thread back on the cores it had (a caller
    in the same process, such as a test runner, keeps its cores)."""
    before = frozenset(os.sched_getaffinity(0))
    pin_this_process(cores)
    try:
        yield
    finally:
        if cores.client is not None:
            pin_this_process(Cores(before, cores.engine_bind))
