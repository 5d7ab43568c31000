"""A request's prediction: awaited only when it orders the request, and learned from off the event loop.

A prediction matters only while requests wait: with a free seat (queue mode: the
backend runs fewer than its N requests and none waits; priority mode: fewer requests
in flight than `--backend-seats`) the order changes nothing. Such a request goes at once
with the fallback prediction, and is predicted in the background, only to learn from
(`LengthRequest.background`: a predictor may do that work later or decline it). At
most `MAX_DEFERRED` such predictions run at once; a request beyond is not predicted.

With the query-window rule (`--query-window W`, gateway/query_window.py), a request that
waits is ordered first by the cheap predictor (`--cheap-predictor`), and predicted by
`--predictor` (`self_predict`) only once its backend's queue has it among its best W.

An awaited prediction ends at `--prediction-timeout`: the request goes on with the
fallback (with the window rule, a self-prediction: the cheap prediction) at once, and
what the predictor was computing for it is dropped or finishes unobserved. Each completion is handed to the predictor's `observe` in the learning
worker (`predict.worker`), never on the event loop; a background prediction is observed
once it has ended.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field, replace

from lengthwise.gateway.backends import Backend
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.flight import Flight
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.scheduler import Scheduler
from lengthwise.gateway.validation import prediction_body
from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.prompt import read_prompt
from lengthwise.predict.self_query.query import UnpredictableRequest
from lengthwise.predict.worker import learning_worker

log = logging.getLogger("lengthwise.gateway")

#: Background predictions under way at most.
MAX_DEFERRED = 64
#: Completions are handed to the learning worker together, at most this often: waking a
#: thread per completion costs the event loop more than the learning does.
LEARN_EVERY_S = 0.05
#: The source of the prediction a request goes with when nothing waits.
DEFERRED = "deferred"


@dataclass(eq=False, kw_only=True)
class Predicting:
    """The gateway's use of its predictor; see the module docstring."""

    config: GatewayConfig
    predictor: Predictor
    metrics: GatewayMetrics
    scheduler: Scheduler | None
    #: The query-window rule's cheap predictor, which orders waiting requests until their query; None: off.
    cheap: Predictor | None = None
    _deferred: set[asyncio.Task[Prediction | None]] = field(default_factory=set, init=False)
    #: Completions not yet handed to the learning worker.
    _completed: list[tuple[Predictor, LengthRequest, Prediction, int]] = field(default_factory=list, init=False)

    def nothing_waits(self, backend: Backend) -> bool:
        """True when a request for `backend` would be served at once whatever its prediction
        (and the gateway predicts lazily)."""
        if not self.config.lazy_prediction:
            return False
        if self.scheduler is not None:
            return self.scheduler.running(backend) < self.scheduler.max_inflight and not self.scheduler.waiting(backend)
        return backend.inflight + backend.peer_inflight < self.config.backend_seats

    async def predict(self, f: Flight) -> None:
        """Set `f.prediction`: awaited if requests wait for `f.backend` (from the cheap predictor with the
        query-window rule), else deferred to the background."""
        assert f.backend is not None
        f.length_request = request = LengthRequest(f.endpoint, prediction_body(f.endpoint, f.body), f.id, f.backend.url)
        try:
            f.job.prompt_tokens = read_prompt(request).tokens  # counted once, shared with the predictors
        except UnpredictableRequest:
            f.job.prompt_tokens = 0
        if self.nothing_waits(f.backend):
            predictor = self.predictor
            f.prediction = Prediction(self.config.fallback_tokens, DEFERRED,
                                      fallback_reason="nothing waits: predicted only to learn")
            f.deferred = self._defer(replace(request, background=True))
            outcome = DEFERRED if f.deferred is not None else "skipped"
        else:
            f.predicted_by = predictor = self.cheap or self.predictor
            started = time.monotonic()
            f.prediction, outcome = await self._awaited(predictor, request)
            f.prediction_s = time.monotonic() - started
            self.metrics.prediction_seconds.observe(f.prediction_s)
            self.metrics.predicted_tokens.observe(f.prediction.tokens)
        f.job.predicted_tokens = f.prediction.tokens
        self.metrics.predictions.labels(predictor.name, outcome).inc()

    async def self_predict(self, f: Flight) -> None:
        """The query-window rule's query, once `f` is among the best W waiting for its backend: `--predictor`'s
        answer replaces the cheap prediction; a failed one (fallback, timeout) leaves the cheap prediction."""
        assert f.length_request is not None and f.backend is not None
        request = f.length_request
        if request.backend != f.backend.url:  # moved to another backend since its cheap prediction
            request = f.length_request = replace(request, backend=f.backend.url, derived=request.derived)
        prediction, outcome = await self._awaited(self.predictor, request)
        self.metrics.predictions.labels(self.predictor.name, outcome).inc()
        if outcome == "ok":
            f.prediction, f.predicted_by = prediction, self.predictor
            f.job.predicted_tokens = prediction.tokens

    async def _awaited(self, predictor: Predictor, request: LengthRequest) -> tuple[Prediction, str]:
        timeout = self.config.prediction_timeout_s
        try:
            async with asyncio.timeout(timeout):
                prediction = await predictor.predict(request)
            outcome = "fallback" if prediction.is_fallback else "ok"
        except TimeoutError:
            prediction, outcome = self._fallback(predictor, f"no prediction within {timeout:g} s"), "timeout"
        except Exception as e:  # predictors never raise, by contract; a buggy one must not cost the request
            log.exception("request %s: predictor %s raised", request.request_id, predictor.name)
            prediction, outcome = self._fallback(predictor, f"predictor raised {type(e).__name__}"), "fallback"
        if not math.isfinite(prediction.tokens):
            prediction, outcome = self._fallback(predictor, f"predictor returned {prediction.tokens}"), "fallback"
        return prediction, outcome

    def _fallback(self, predictor: Predictor, reason: str) -> Prediction:
        return Prediction(self.config.fallback_tokens, predictor.name, fallback_reason=reason)

    def _defer(self, request: LengthRequest) -> asyncio.Task[Prediction | None] | None:
        if len(self._deferred) >= MAX_DEFERRED:
            return None
        task = asyncio.create_task(self._in_background(request))
        self._deferred.add(task)
        task.add_done_callback(self._deferred.discard)
        return task

    async def _in_background(self, request: LengthRequest) -> Prediction | None:
        """The prediction to learn from; None if it failed, timed out or was declined."""
        try:
            async with asyncio.timeout(self.config.prediction_timeout_s):
                return await self.predictor.predict(request)
        except Exception as e:  # Backlogged, a timeout, a predictor's bug: nothing to learn from
            log.debug("request %s: background prediction ended without one: %r", request.request_id, e)
            return None

    def learn(self, f: Flight, actual_tokens: int) -> None:
        """Hand the completion to the predictor that made its prediction (after its background
        prediction, if one runs)."""
        assert f.length_request is not None and f.prediction is not None
        request, used, deferred = f.length_request, f.prediction, f.deferred
        predictor = f.predicted_by or self.predictor
        if deferred is None:
            self._observe(predictor, request, used, actual_tokens)
        elif deferred.done():
            self._observe(predictor, request, _result(deferred) or used, actual_tokens)
        else:
            deferred.add_done_callback(
                lambda done: self._observe(predictor, request, _result(done) or used, actual_tokens))

    def _observe(self, predictor: Predictor, request: LengthRequest, prediction: Prediction,
                 actual_tokens: int) -> None:
        if not self._completed:
            asyncio.get_running_loop().call_later(LEARN_EVERY_S, self._hand_over)
        self._completed.append((predictor, request, prediction, actual_tokens))

    def _hand_over(self) -> None:
        completed, self._completed = self._completed, []
        if completed:
            learning_worker().submit(self._observe_all, completed)

    def _observe_all(self, completed: list[tuple[Predictor, LengthRequest, Prediction, int]]) -> None:
        for predictor, request, prediction, actual_tokens in completed:
            try:
                predictor.observe(request, prediction, actual_tokens)
            except Exception:
                log.exception("request %s: %s.observe failed", request.request_id, predictor.name)

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Return once the background predictions have ended and the learning worker has taken in
        every completion given so far (tests, shutdown)."""
        await asyncio.gather(*self._deferred, return_exceptions=True)
        if self._completed:
            self._hand_over()
        await asyncio.to_thread(learning_worker().wait, timeout_s)

    async def aclose(self) -> None:
        """Stop the background predictions, and let the learning worker take in what it was given
        (so that a predictor's state saved on close includes it)."""
        for task in self._deferred:
            task.cancel()
        await self.settle(timeout_s=5.0)


def _result(task: asyncio.Task[Prediction | None]) -> Prediction | None:
    return None if task.cancelled() else task.result()
