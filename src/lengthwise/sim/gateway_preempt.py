"""The gateway's preemption (`lengthwise serve --preempt`) on the simulated engine: abort and resume.

The gateway ends a running request's upstream run to admit a much shorter waiting one and
later resumes it as a continuation, prompt + the tokens generated so far. On the engine
that is: the request's seat and KV blocks are freed (its full blocks stay in the prefix
cache, least recently freed evicted first, `lengthwise.sim.kv`), and the resume is a new
prefill of prompt + generated tokens that finds in the cache whatever was not evicted
meanwhile. Nothing generated is thrown away; the waste is the resume's uncached prefill.

Who yields is decided as the gateway decides (`lengthwise.gateway.preemptor`), with the
same code: the running requests are re-predicted from the tokens they produced
(`LengthDistribution.reprice`), the one with the largest key is the candidate, and
`PreemptSettings.should_yield` rules (margin, at most `max` preemptions, early in its decode
or a gain above the measured resume cost, never an overdue request). The resume cost is
measured as the gateway measures it: from a resume's admission to its next token. The check
runs each time requests arrive and every `check_every` decode steps while requests wait;
only requests that are decoding (have produced a token) can be chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lengthwise.core.policy.base import Policy
from lengthwise.core.policy.service import ServiceTime
from lengthwise.core.preempt import PreemptSettings, ResumeCost
from lengthwise.predict.base import Prediction
from lengthwise.predict.remaining import UNCAPPED_TOKENS, LengthDistribution
from lengthwise.sim.batch import DecodeBatch
from lengthwise.sim.request import SimRequest


@dataclass
class GatewayPreemption:
    """The gateway's decision on the simulated engine; the scheduler applies it (`Scheduler.preempt`)."""

    settings: PreemptSettings
    policy: Policy
    #: The max_tokens clients sent, the cap of the length distributions (None: uncapped).
    max_tokens: int | None = None
    resume_cost: ResumeCost = field(default_factory=ResumeCost)
    #: The decode step of the last check.
    checked_at: int = 0
    service: ServiceTime = field(init=False)

    def __post_init__(self) -> None:
        self.service = self.policy.service or ServiceTime()

    def due(self, batch: DecodeBatch) -> bool:
        """`check_every` decode steps have passed since the last check."""
        return self.steps_to_check(batch) <= 0

    def steps_to_check(self, batch: DecodeBatch) -> int:
        """Decode steps until the next periodic check (a decode stretch ends there while requests wait)."""
        return self.checked_at + self.settings.check_every - batch.steps

    def victim(self, batch: DecodeBatch, head: SimRequest, now: float) -> SimRequest | None:
        """The decoding request that yields its seat to `head`, if one should."""
        self.checked_at = batch.steps
        decoding = [r for r in batch.requests if r.query_for is None]
        if not decoding:
            return None
        for request in decoding:
            self.length(request).reprice(request.job, batch.generated_tokens(request))
        victim = max(decoding, key=lambda r: self.policy.key(r.job, now))  # a decoder has produced a token
        if not self.settings.should_yield(
            self.policy, victim.job, head.job, now, preemptions=victim.preemptions,
            expected_length=self.length(victim).expected_total(0),
            resume_cost_s=self.resume_cost.expected(victim.job.generated_tokens, self.service),
        ):  # fmt: skip
            return None
        victim.preemptions += 1
        return victim

    def length(self, request: SimRequest) -> LengthDistribution:
        """The request's length distribution, from the prediction it was submitted with (made once)."""
        if request.length is None:
            prediction = Prediction(request.job.predicted_tokens, "sim")
            request.length = LengthDistribution.of(prediction, self.max_tokens or UNCAPPED_TOKENS)
        return request.length
