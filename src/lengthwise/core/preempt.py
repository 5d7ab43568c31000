"""Limited preemption from outside the engine: when a running request yields its seat to a waiting one.

The gateway (`lengthwise.gateway.preemptor`) and the simulator's model of it
(`lengthwise.sim.gateway_preempt`) decide by this one rule, so that what is simulated is
what is run. A running request is aborted upstream and later resumed as a continuation
(prompt + the text generated so far), whose prefill mostly hits the prefix cache. Both
callers first re-predict the running request's remaining length from the tokens it has
produced (`lengthwise.predict.remaining`), so its key is its remaining service.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lengthwise.core.policy.base import Job, Policy
from lengthwise.core.policy.service import ServiceTime
from lengthwise.core.spec import parse_params

#: Weight of the newest resume in the measured resume cost (an exponentially weighted mean).
_COST_SMOOTHING = 0.2


@dataclass(frozen=True)
class PreemptSettings:
    """`--preempt margin=2,max=1,early=0.25`: when the gateway ends a running request's upstream run
    to admit a waiting one, and resumes it later (docs/GATEWAY.md, "Preemption")."""

    #: A running request is preempted only if its key (remaining service) exceeds margin × the
    #: waiting request's key.
    margin: float = 2.0
    #: Preemptions per request at most: a bound on wasted work and on how often one request yields.
    max: int = 1
    #: ... and only while it has generated less than this share of its predicted length, or when
    #: the expected gain exceeds the measured cost of resuming it.
    early: float = 0.25
    #: Output tokens between the checks a running request makes against the queue's head (besides
    #: the check each time a request starts waiting).
    check_every: int = 16

    def __post_init__(self) -> None:
        if not self.margin >= 1:
            raise ValueError(f"preempt: margin must be >= 1, got {self.margin}")
        if self.max < 0 or self.check_every < 1:
            raise ValueError(f"preempt: need max >= 0 and check_every >= 1, got {self.max}, {self.check_every}")
        if not 0 <= self.early <= 1:
            raise ValueError(f"preempt: early must be within [0, 1], got {self.early}")

    @classmethod
    def parse(cls, text: str) -> PreemptSettings:
        """From `K=V,...` (empty: the defaults); ValueError names an unknown or bad field."""
        params = parse_params(text, "--preempt")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"preempt: unknown field(s) {unknown}; known: {', '.join(sorted(known))}")
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"preempt: bad value in {text!r}: {e}") from None

    def should_yield(
        self, policy: Policy, running: Job, head: Job, now: float, *, preemptions: int, expected_length: float,
        resume_cost_s: float,
    ) -> bool:  # fmt: skip
        """Whether `running` (re-predicted: its key is its remaining service) yields to the waiting `head`.

        Never when either is overdue (`Policy.overdue`: a running one would only wait longer, a waiting
        one is served next by admission order anyway), nor after `max` preemptions. Else when its key
        exceeds `margin` × the head's, and it is early in its decode (under `early` × its
        `expected_length`, the length expected before it started) or the gain, its remaining service
        minus the head's, exceeds `resume_cost_s`.
        """
        if preemptions >= self.max or policy.overdue(head, now) or policy.overdue(running, now):
            return False
        if not policy.key(running, now) > self.margin * policy.key(head, now):
            return False
        if running.generated_tokens < self.early * expected_length:
            return True
        service = policy.service or ServiceTime()
        return service.of(running) - service.of(head) > resume_cost_s


@dataclass
class ResumeCost:
    """Seconds a resume costs: an exponentially weighted mean of measured ones (from sending the
    continuation to its first token), else the prefill of the tokens it re-sends."""

    measured_s: float | None = None

    def observe(self, seconds: float) -> None:
        cost = self.measured_s
        self.measured_s = seconds if cost is None else cost + _COST_SMOOTHING * (seconds - cost)

    def expected(self, generated: int, service: ServiceTime) -> float:
        """The cost of resuming a request that has generated `generated` tokens."""
        return self.measured_s if self.measured_s is not None else service.seconds(generated, 0)
