"""What a benchmark run sends and when: prompts paired with arrival times.

A plan is built once from a seed and replayed unchanged by every policy in a
comparison, so that FCFS, LLM-guided and oracle see the same prompts at the same
instants and differ only in how they are scheduled.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from lengthwise.bench.prompts import load_prompts
from lengthwise.workload.arrivals import gamma_arrivals, rescale_to_rate
from lengthwise.workload.synthetic import synthetic_prompt
from lengthwise.workload.trace import Trace, trace_from_spec

#: `lengthwise bench` without --n or --max-tokens, on prompts (a trace brings its own).
DEFAULT_N = 100
DEFAULT_MAX_TOKENS = 256
TRACE = "trace:"


@dataclass(frozen=True)
class PlannedRequest:
    """One request of a plan: `arrival_s` is seconds after the run's start."""

    id: str
    prompt: str
    arrival_s: float
    max_tokens: int
    #: Sent as vLLM's `priority` field when set (lower is served first); the oracle
    #: arm sets it from actual lengths, the other arms leave it to the gateway.
    priority: int | None = None
    #: Sent as vLLM's `ignore_eos`: the answer runs to `max_tokens` exactly, as a trace's output length says.
    ignore_eos: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(prompts: Sequence[str], arrivals: Sequence[float], max_tokens: int) -> list[PlannedRequest]:
    """Pair prompts with arrival offsets; ids are stable (`r0000`, ...) across arms."""
    if len(prompts) != len(arrivals):
        raise ValueError(f"{len(prompts)} prompts but {len(arrivals)} arrival times")
    return [
        PlannedRequest(id=f"r{i:04d}", prompt=p, arrival_s=float(t), max_tokens=max_tokens)
        for i, (p, t) in enumerate(zip(prompts, arrivals, strict=True))
    ]


def trace_plan(
    trace: Trace, *, arrivals: Sequence[float] | None = None, max_tokens: int | None = None, seed: int = 0
) -> list[PlannedRequest]:
    """A trace replayed as it ran: each request at its arrival (or at `arrivals`), with its own output length.

    Output lengths are fixed (`ignore_eos` with `max_tokens` = the trace's output tokens, capped at
    `max_tokens` when given); prompts are the trace's texts, or synthetic prompts of its prompt
    token counts (cl100k) when it has none.
    """
    rng = np.random.default_rng(seed)
    texts = trace.texts or [synthetic_prompt(int(t), rng) for t in trace.prompt_tokens]
    outputs = trace.output_tokens if max_tokens is None else np.minimum(trace.output_tokens, max_tokens)
    plan = build_plan(texts, trace.arrival if arrivals is None else arrivals, 1)
    return [replace(r, max_tokens=int(o), ignore_eos=True) for r, o in zip(plan, outputs, strict=True)]


def with_priorities(plan: Sequence[PlannedRequest], priorities: dict[str, int]) -> list[PlannedRequest]:
    """The same plan with vLLM priorities set per request id (missing ids keep none)."""
    return [replace(r, priority=priorities.get(r.id, r.priority)) for r in plan]


def run_plan(
    workload: str, n: int | None, *, rate: float = math.inf, burstiness: float = 1.0, arrivals_from: str | None = None,
    max_tokens: int | None = None, max_prompt_tokens: int | None = 512, seed: int = 0,
) -> list[PlannedRequest]:  # fmt: skip
    """What `lengthwise bench` sends.

    ``trace:SPEC``: the trace's requests (tiled or cut to `n`) with their lengths (`trace_plan`).
    Otherwise `n` prompts of `workload` at gamma arrivals, or at the arrival times of the
    trace `arrivals_from` (a ``trace:`` spec without the prefix). A finite `rate` rescales a
    trace's timing to that mean rate, its bursts kept.
    """
    if workload.startswith(TRACE):
        if arrivals_from is not None:
            raise ValueError("a trace workload brings its own arrival times: leave out --trace")
        trace = trace_from_spec(workload.removeprefix(TRACE)).tiled(n)
        return trace_plan(trace, arrivals=_at_rate(trace.arrival, rate), max_tokens=max_tokens, seed=seed)
    n = n or DEFAULT_N
    prompts = load_prompts(workload, n, seed, max_prompt_tokens)
    if arrivals_from is None:
        arrivals = gamma_arrivals(n, rate, burstiness, seed)
    else:
        arrivals = _at_rate(trace_from_spec(arrivals_from).tiled(n).arrival, rate)
    return build_plan(prompts, arrivals, max_tokens or DEFAULT_MAX_TOKENS)


def _at_rate(arrivals: np.ndarray, rate: float) -> np.ndarray:
    """A trace's own timing (`rate` infinite), else its pattern rescaled to `rate` req/s."""
    return arrivals if math.isinf(rate) else rescale_to_rate(arrivals, rate)
