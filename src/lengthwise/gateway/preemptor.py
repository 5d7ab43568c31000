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

from lengthwise.core.policy import Policy, ServiceTime
from lengthwise.gateway.backends import Backend
from lengthwise.gateway.config import PreemptSettings
from lengthwise.gateway.flight import Flight
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.resumable import not_resumable, remaining_cap
from lengthwise.gateway.scheduler import Scheduler
from lengthwise.gateway.stitch import Stitcher
from lengthwise.predict.base import Prediction
from lengthwise.predict.remaining import LengthDistribution

log = logging.getLogger("lengthwise.gateway")

#: The cap a length distribution assumes for a request that gives none (the engine's context bounds it).
UNCAPPED_TOKENS = 32768
#: Weight of the newest resume in the measured resume cost (an exponentially weighted mean).
_COST_SMOOTHING = 0.2


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
    #: Mean seconds from sending a continuation to its first token; None before any.
    resume_cost_s: float | None = field(default=None, init=False)
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
        if self.policy.overdue(head, now):
            return
        for f in running.values():
            self.reprice(f)
        victim = max(running.values(), key=lambda f: self.policy.key(f.job, now))
        if self._should_yield(victim, self.policy.key(head, now), self._service.of(head), now):
            victim.yield_requested = True
            self._pending[backend.index] = victim.id
            log.debug("request %s: asked to yield to %s", victim.id, head.id)

    def reprice(self, f: Flight) -> None:
        """Re-predict a running request from the tokens it has produced: its expected total length
        given that it has not ended, so that its key is its remaining service (SRPT)."""
        assert f.stitcher is not None and f.length is not None
        generated = f.stitcher.transcript.generated
        f.job.generated_tokens = generated
        f.job.predicted_tokens = f.length.expected_total(generated)
        f.job.cached_tokens = f.job.prompt_tokens  # its prompt is in the engine's prefix cache

    def _should_yield(self, f: Flight, head_key: float, head_service_s: float, now: float) -> bool:
        assert f.stitcher is not None and f.length is not None
        transcript = f.stitcher.transcript
        left = remaining_cap(f.endpoint, f.body, transcript.generated)
        if (f.yield_requested or f.stitcher.done or not transcript.resumable(f.endpoint) or transcript.generated < 1
                or (left is not None and left < 1) or f.preemptions >= self.settings.max
                or self.policy.overdue(f.job, now)):
            return False
        if not self.policy.key(f.job, now) > self.settings.margin * head_key:
            return False
        if transcript.generated < self.settings.early * f.length.expected_total(0):
            return True
        gain_s = self._service.of(f.job) - head_service_s
        return gain_s > self.resume_cost(transcript.generated)

    def resume_cost(self, generated: int) -> float:
        """Seconds a resume is expected to cost: measured, or the prefill of the generated tokens."""
        if self.resume_cost_s is not None:
            return self.resume_cost_s
        return self._service.seconds(generated, 0)

    def preempted(self, f: Flight) -> None:
        """`f` is yielding its seat now."""
        f.preemptions += 1
        self.metrics.preemptions.inc()
        self.reprice(f)

    def resumed(self, seconds: float) -> None:
        """A continuation's first token came `seconds` after it was sent."""
        self.metrics.resume_seconds.observe(seconds)
        cost = self.resume_cost_s
        self.resume_cost_s = seconds if cost is None else cost + _COST_SMOOTHING * (seconds - cost)


def _length_from(f: Flight, cap: float, background: asyncio.Task[Prediction | None]) -> None:
    """`f`'s length distribution from its background prediction, once that has come (if it did)."""
    prediction = None if background.cancelled() else background.result()
    if prediction is not None:
        f.length = LengthDistribution.of(prediction, cap)
