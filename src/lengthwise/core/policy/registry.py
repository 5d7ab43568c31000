"""Policies by name or spec, for the CLI, the gateway and the simulator: tables of factories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lengthwise.core.policy.aging import Aging
from lengthwise.core.policy.base import Policy
from lengthwise.core.policy.deadline import Deadline
from lengthwise.core.policy.fcfs import FCFS
from lengthwise.core.policy.hrrn import HRRN
from lengthwise.core.policy.mlfq import SkipJoinMLFQ
from lengthwise.core.policy.rr import RoundRobin
from lengthwise.core.policy.sjf import SJF
from lengthwise.core.policy.srpt import SRPT
from lengthwise.core.spec import Spec, parse_chain
from lengthwise.core.policy.sst import SST

POLICIES: dict[str, Callable[..., Policy]] = {
    "fcfs": FCFS,
    "sjf": SJF,
    "sst": SST,
    "srpt": SRPT,
    "hrrn": HRRN,
    "rr": RoundRobin,
    "mlfq": SkipJoinMLFQ,
}

#: Policies that wrap another: ``base+wrapper:params``.
WRAPPERS: dict[str, Callable[..., Policy]] = {
    "aging": Aging,
    "deadline": Deadline,
}

#: Shortest predicted service time first, no wait past k × the FCFS-equivalent wait
#: (docs/SIMULATOR.md, "Policies": measured on the Azure trace and ShareGPT lengths).
DEFAULT_POLICY = "sst+deadline"


def make_policy(spec: str, **params: Any) -> Policy:
    """Build a policy from a name or a spec (`lengthwise.core.spec`); keyword `params` go to the base policy.

    Specs: ``NAME[:K=V,...][+WRAPPER[:K=V,...]]...``, e.g. ``sjf``, ``srpt:overrun=0.3``,
    ``sjf+aging:rate=2,max_wait=30`` (or ``sjf+aging(rate=2, max_wait=30)``), ``sst+deadline:k=1``. Base policies: fcfs, sjf
    (prompt_weight), sst (the ServiceTime priors), srpt (overrun), hrrn (tokens_per_s),
    rr (quantum), mlfq (levels, base_quantum, prefill_ratio); wrappers: aging (rate,
    max_wait), deadline (k, memory). Unknown names or parameters raise ValueError.
    """
    base, *wrappers = parse_chain(spec, "policy spec")
    policy = _build(POLICIES, Spec(base.name, {**base.params, **params}), "policy")
    for wrapper in wrappers:
        policy = _build(WRAPPERS, wrapper, "policy wrapper", policy)
    return policy


def _build(table: dict[str, Callable[..., Policy]], spec: Spec, kind: str, *args: Any) -> Policy:
    try:
        factory = table[spec.name]
    except KeyError:
        raise ValueError(f"unknown {kind} {spec.name!r}; known: {', '.join(sorted(table))}") from None
    nested = sorted(key for key, value in spec.params.items() if isinstance(value, Spec | list))
    if nested:
        raise ValueError(f"{kind} {spec.name!r}: parameters {nested} take numbers, not specs or lists")
    try:
        return factory(*args, **spec.params)
    except TypeError as e:
        raise ValueError(f"{kind} {spec.name!r}: bad parameters {spec.params}: {e}") from None
