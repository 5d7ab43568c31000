"""Where a request goes after its backend failed: strikes per backend, then the next backend."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from lengthwise.gateway.backends import Backend
from lengthwise.gateway.errors import GatewayError
from lengthwise.gateway.proxy import UpstreamFailed

#: Status and words for a request whose last backend failed: no addresses or internals in them.
_FAILURES = {
    "connect": (503, "could not be reached"),
    "timeout": (504, "did not answer in time"),
    "disconnect": (502, "closed the connection before answering"),
    "invalid": (502, "sent an answer that is not valid HTTP or JSON"),
}


@dataclass
class Retry:
    """One request's tries. A dropped connection is one strike (maybe a stale keep-alive
    connection: the same backend once more), and so is a connect timeout (maybe the gateway's
    own event loop lagging under a burst); any other failure is two. A backend with two
    strikes is not tried again for this request.

    `choose(exclude)` picks a backend other than `exclude`, or raises GatewayError when none is left.
    """

    choose: Callable[[Collection[Backend]], Backend]
    strikes: dict[Backend, int] = field(default_factory=dict)

    def after_failure(self, backend: Backend, failure: UpstreamFailed) -> Backend | None:
        """The backend to move to after `failure` on `backend`; None: `backend` once more."""
        doubtful = failure.kind == "disconnect" or (failure.kind == "connect" and not failure.connect)
        strikes = self.strikes[backend] = self.strikes.get(backend, 0) + (1 if doubtful else 2)
        return self.elsewhere(failure) if strikes >= 2 else None

    def elsewhere(self, failure: UpstreamFailed | None = None) -> Backend:
        """A backend without two strikes; when none is left, the error of the last `failure` (if any)."""
        try:
            return self.choose(tuple(b for b, strikes in self.strikes.items() if strikes >= 2))
        except GatewayError:
            if failure is None:
                raise
            status, what = _FAILURES[failure.kind]
            raise GatewayError(status, f"the backend {what}, and no other backend could take the request",
                               code="backend_unavailable") from None
