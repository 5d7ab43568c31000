"""Policies by name or spec, for the CLI, the gateway and the simulator."""

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
from lengthwise.core.policy.spec import parse_spec
from lengthwise.core.policy.srpt import SRPT
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


def make_policy(name: str, **params: Any) -> Policy:
    """Build a policy from a name or a spec; keyword `params` go to the base policy.

    Specs: ``NAME[:K=V,...][+WRAPPER[:K=V,...]]...``, e.g. ``sjf``, ``srpt:overrun=0.3``,
    ``sjf+aging:rate=2,max_wait=30``, ``sst+deadline:k=1``. Base policies: fcfs, sjf
    (prompt_weight), sst (the ServiceTime priors), srpt (overrun), hrrn (tokens_per_s),
    rr (quantum), mlfq (levels, base_quantum, prefill_ratio); wrappers: aging (rate,
    max_wait), deadline (k, memory). Unknown names or parameters raise ValueError.
    """
    (base_name, base_params), *wrappers = parse_spec(name)
    policy = _build(POLICIES, base_name, {**base_params, **params}, "policy")
    for wrapper_name, wrapper_params in wrappers:
        policy = _build(WRAPPERS, wrapper_name, wrapper_params, "policy wrapper", policy)
    return policy


#: The spec parser under the name the CLI and gateway read best.
parse_policy = make_policy


def _build(table: dict[str, Callable[..., Policy]], name: str, params: dict[str, Any], kind: str, *args: Any) -> Policy:
    try:
        factory = table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(table))}") from None
    try:
        return factory(*args, **params)
    except TypeError as e:
        raise ValueError(f"{kind} {name!r}: bad parameters {params}: {e}") from None
