"""Routers: which replica a request goes to, from what a load balancer in front of N engines sees.

A router sees, per replica, the requests it sent there that have not finished and
their predicted work (`ReplicaLoad`), and of the request its prefix key and
predicted work; with one shared queue in front it chooses only among replicas with
a free seat. Ties go to the replica after the last one a router picked, so an idle
cluster is filled evenly.

* ``round-robin``: each replica in turn, whatever its load.
* ``least-requests``: the fewest outstanding requests (Envoy's least_request, llm-d's queue scorer).
* ``least-work``: the least predicted work outstanding, in engine-seconds.
* ``prefix-affinity:slack=S``: the prefix's home replica (a hash of its key, so a
  conversation's turns find their prefix cached) unless the home has more than S
  engine-seconds more predicted work outstanding than the least loaded replica;
  then that one. It is the rule of the gateway's `BackendPool.choose`; S's default,
  0.41 s, is the gateway's default slack of 4,096 predicted output tokens priced at
  `ServiceTime`'s decode prior.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from lengthwise.core.policy.service import ServiceTime
from lengthwise.core.spec import parse_spec

#: The gateway's default affinity slack (4,096 predicted output tokens) in engine-seconds.
DEFAULT_SLACK_S = 4096 * ServiceTime().decode_s_per_token


class ReplicaLoad:
    """Per replica: requests sent there and not finished, and their predicted work (engine-seconds)."""

    def __init__(self, replicas: int) -> None:
        self.outstanding = np.zeros(replicas, dtype=np.int64)
        self.work = np.zeros(replicas)

    def add(self, replica: int, work: float) -> None:
        self.outstanding[replica] += 1
        self.work[replica] += work

    def remove(self, replica: int, work: float) -> None:
        self.outstanding[replica] -= 1
        # An empty replica has no work left: no rounding residue builds up.
        self.work[replica] = self.work[replica] - work if self.outstanding[replica] else 0.0


class Router(ABC):
    """Picks a replica for each request."""

    name = "router"

    def __init__(self, replicas: int) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        self.replicas = replicas
        #: Row k: the replicas in order k, k+1, ..., wrapping: where ties start their search.
        self._rotations = (np.arange(replicas)[None, :] + np.arange(replicas)[:, None]) % replicas
        self._turn = 0

    @abstractmethod
    def choose(self, load: ReplicaLoad, prefix_key: int, work: float, free: np.ndarray | None = None) -> int:
        """The replica for a request; only one where `free` (a mask) is set, when given (one must be)."""

    def _least(self, values: np.ndarray, free: np.ndarray | None) -> int:
        """The replica with the smallest value among the free ones, ties to the first after the last pick."""
        order = self._rotations[self._turn]
        ranked = values[order] if free is None else np.where(free[order], values[order], np.inf)
        replica = int(order[np.argmin(ranked)])
        self._turn = (replica + 1) % self.replicas
        return replica

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.replicas})"


class RoundRobin(Router):
    name = "round-robin"

    def choose(self, load: ReplicaLoad, prefix_key: int, work: float, free: np.ndarray | None = None) -> int:
        if free is None:
            replica = self._turn
            self._turn = (replica + 1) % self.replicas
            return replica
        order = self._rotations[self._turn]
        replica = int(order[np.argmax(free[order])])  # the first free one from here
        self._turn = (replica + 1) % self.replicas
        return replica


class LeastRequests(Router):
    name = "least-requests"

    def choose(self, load: ReplicaLoad, prefix_key: int, work: float, free: np.ndarray | None = None) -> int:
        return self._least(load.outstanding, free)


class LeastWork(Router):
    name = "least-work"

    def choose(self, load: ReplicaLoad, prefix_key: int, work: float, free: np.ndarray | None = None) -> int:
        return self._least(load.work, free)


class PrefixAffinity(Router):
    name = "prefix-affinity"

    def __init__(self, replicas: int, slack: float = DEFAULT_SLACK_S) -> None:
        super().__init__(replicas)
        if slack < 0:
            raise ValueError(f"prefix-affinity: slack must be >= 0 engine-seconds, got {slack}")
        self.slack = slack

    def home(self, prefix_key: int) -> int:
        """The prefix's home replica: a fixed hash of its key (Fibonacci hashing, 64 bits)."""
        return (((prefix_key * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) >> 32) % self.replicas

    def choose(self, load: ReplicaLoad, prefix_key: int, work: float, free: np.ndarray | None = None) -> int:
        home, least = self.home(prefix_key), self._least(load.work, free)
        if free is not None and not free[home]:
            return least
        return home if load.work[home] - load.work[least] <= self.slack else least

    def __repr__(self) -> str:
        return f"PrefixAffinity({self.replicas}, slack={self.slack:g})"


ROUTERS: dict[str, Callable[..., Router]] = {
    r.name: r for r in (RoundRobin, LeastRequests, LeastWork, PrefixAffinity)
}


def make_router(spec: str, replicas: int) -> Router:
    """A router from a spec: ``round-robin``, ``least-requests``, ``least-work``, ``prefix-affinity[:slack=S]``."""
    parsed = parse_spec(spec, "router spec")
    try:
        factory = ROUTERS[parsed.name]
    except KeyError:
        raise ValueError(f"unknown router {parsed.name!r}; known: {', '.join(ROUTERS)}") from None
    try:
        return factory(replicas, **parsed.params)
    except TypeError as e:
        raise ValueError(f"router {parsed.name!r}: bad parameters {parsed.params}: {e}") from None
