"""When the gateway preempts a running request for a waiting one (queue modes, `--preempt`).

vLLM's priorities only order its waiting queue: a long request, once running, keeps its
seat while short ones wait behind it. The gateway can end that request's upstream run
(closing the connection aborts it in vLLM) and resume it later as a continuation
(`resumable`, `stitch`), which is shortest-remaining-time-first from outside the engine.

A running request is preempted for the head of its backend's queue only when all hold:

- it can be resumed exactly (`resumable.not_resumable`, and an answer that stayed plain text
  with every token's id reported), it has produced a token and has tokens left under its cap;
- it was preempted fewer than `max` times (bounds wasted work and how often one request yields);
- it is not overdue: a request past the wait bound its policy promised (`Policy.overdue`,
  the default `deadline`) would only wait longer. An overdue *waiting* request preempts no
  one either: admission order already serves it next;
- its key, re-predicted from the tokens it has produced (its remaining service), exceeds
  `margin` × the waiting request's key;
- it is early in its decode (fewer than `early` × its expected length generated), or the
  expected gain, its remaining service minus the waiting one's, exceeds the measured cost
  of a resume (the mean time to the first token of past continuations; before any, the
  prefill of the tokens it generated).

It looks each time a request starts waiting, and every `check_every` tokens of a running
preemptible request (a request outliving its prediction grows its remaining service). One
preemption per backend is under way at a time: the slot it frees admits the queue's head.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field

from lengthwise.core.policy import Job, Policy, ServiceTime
from lengthwise.core.preempt import PreemptSettings, ResumeCost
from lengthwise.gateway.backends import Backend
from lengthwise.gateway.flight import Flight
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.resumable import not_resumable, remaining_cap
from lengthwise.gateway.scheduler import Scheduler
from lengthwise.gateway.stitch import Stitcher
from lengthwise.predict.base import Prediction
from lengthwise.predict.remaining import UNCAPPED_TOKENS, LengthDistribution

log = logging.getLogger("lengthwise.gateway")



@dataclass(eq=False)
class Preemptor:
    settings: PreemptSettings
    policy: Policy
    scheduler: Scheduler
    metrics: GatewayMetrics
    #: Preemptible requests running upstream now, per backend index.
    _running: dict[int, dict[str, Flight]] = field(default_factory=dict, init=False)
    #: The request being preempted on each backend (until its run has ended).
    _pending: dict[int, str] = field(default_factory=dict, init=False)
    #: Seconds from sending a continuation to its first token.
    resume_cost: ResumeCost = field(default_factory=ResumeCost, init=False)
    _service: ServiceTime = field(init=False)

    def __post_init__(self) -> None:
        self._service = self.policy.service or ServiceTime()
        self.scheduler.on_queued = self.consider

    def prepare(self, f: Flight) -> None:
        """Make a predicted request preemptible (its stitcher and length distribution), unless it cannot
        be resumed exactly (counted by reason)."""
        reason = not_resumable(f.endpoint, f.body)
        if reason is not None:
            self.metrics.not_preemptible.labels(reason).inc()
            return
        assert f.prediction is not None
        options = f.body.get("stream_options")
        f.stitcher = Stitcher(f.endpoint, f.stream, f.stream and isinstance(options, dict)
                              and bool(options.get("include_usage")))
        cap = remaining_cap(f.endpoint, f.body, 0) or UNCAPPED_TOKENS
        f.length = LengthDistribution.of(f.prediction, cap)
        if f.deferred is not None:  # sent at once with the fallback: the background prediction knows better
            f.deferred.add_done_callback(functools.partial(_length_from, f, cap))

    def started(self, f: Flight) -> None:
        """`f`'s run upstream began: it may be chosen from now until `stopped`."""
        assert f.backend is not None
        self._running.setdefault(f.backend.index, {})[f.id] = f

    def stopped(self, f: Flight) -> None:
        """`f`'s run ended (preempted, finished, failed or abandoned)."""
        assert f.backend is not None
        self._running.get(f.backend.index, {}).pop(f.id, None)
        if self._pending.get(f.backend.index) == f.id:
            del self._pending[f.backend.index]

    def consider(self, backend: Backend) -> None:
        """Ask the running request with the largest remaining service on `backend` to yield, if it
        should for the queue's head (the module docstring's rules)."""
        if backend.index in self._pending:
            return
        head = self.scheduler.head(backend)
        running = self._running.get(backend.index)
        if head is None or not running:
            return
        now = self.scheduler.clock()
        for f in running.values():
            self.reprice(f)
        victim = max(running.values(), key=lambda f: self.policy.key(f.job, now))
        if self._should_yield(victim, head, now):
            victim.yield_requested = True
            self._pending[backend.index] = victim.id
            log.debug("request %s: asked to yield to %s", victim.id, head.id)

    def reprice(self, f: Flight) -> None:
        """Re-predict a running request from the tokens it has produced: its expected total length
        given that it has not ended, so that its key is its remaining service (SRPT)."""
        assert f.stitcher is not None and f.length is not None
        f.length.reprice(f.job, f.stitcher.transcript.generated)

    def _should_yield(self, f: Flight, head: Job, now: float) -> bool:
        """The gateway's own conditions (a stream it can resume exactly, a token produced and one left),
        then the shared rule (`PreemptSettings.should_yield`)."""
        assert f.stitcher is not None and f.length is not None
        transcript = f.stitcher.transcript
        left = remaining_cap(f.endpoint, f.body, transcript.generated)
        if (f.yield_requested or f.stitcher.done or not transcript.resumable(f.endpoint) or transcript.generated < 1
                or (left is not None and left < 1)):
            return False
        return self.settings.should_yield(
            self.policy, f.job, head, now, preemptions=f.preemptions, expected_length=f.length.expected_total(0),
            resume_cost_s=self.resume_cost.expected(transcript.generated, self._service),
        )

    def preempted(self, f: Flight) -> None:
        """`f` is yielding its seat now."""
        f.preemptions += 1
        self.metrics.preemptions.inc()
        self.reprice(f)

    def resumed(self, seconds: float) -> None:
        """A continuation's first token came `seconds` after it was sent."""
        self.metrics.resume_seconds.observe(seconds)
        self.resume_cost.observe(seconds)


def _length_from(f: Flight, cap: float, background: asyncio.Task[Prediction | None]) -> None:
    """`f`'s length distribution from its background prediction, once that has come (if it did)."""
    prediction = None if background.cancelled() else background.result()
    if prediction is not None:
        f.length = LengthDistribution.of(prediction, cap)
