"""Shortest service time first: SJF on the engine-seconds a request is predicted to take."""

from __future__ import annotations

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.service import ServiceTime


class SST(Policy):
    """Key = predicted service time (`ServiceTime`) in microseconds: prefill of the uncached
    prompt plus decode of the predicted output, at coefficients learned from the backend.

    Microseconds, so that an engine's integer priority (the gateway's priority mode, scale
    1) still tells requests apart, and stays within int32 up to 35 minutes of service. Keys are taken when a job is queued: a waiting job keeps
    the coefficients of that moment, which drift slowly. Parameters are the estimator's
    priors (`prefill_s_per_token`, `decode_s_per_token`, `memory`).
    """

    name = "sst"

    def __init__(self, service: ServiceTime | None = None, **priors: float) -> None:
        if service is not None and priors:
            raise ValueError("sst: give a ServiceTime or its priors, not both")
        self.service = service or ServiceTime(**priors)  # type: ignore[arg-type]

    def key(self, job: Job, now: float) -> float:
        return 1e6 * self.service.of(job)

    def __repr__(self) -> str:
        return f"SST({self.service!r})"
