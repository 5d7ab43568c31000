"""Do no harm: schedule by the predictor that measurably ranks best, or by arrival when none does.

`AutoPredictor` is a predictor made of candidates. A request waits for the chosen
candidate's prediction only. The others predict it in the background, to be measured:
the cheap ones every request (their own batchers decline background work beyond their
bound), the costly ones (those that query the engine: the self-prediction) only on a
request that nothing waits for (`LengthRequest.background`: the gateway found a free seat),
a `sample` fraction of those and at most `max_shadows` at once: measuring spends engine
time only when the engine has room (in a burst of 60, sampling 10% of the requests that
waited added 14-26% to the engine's prompt tokens: docs/results/bench/HISTORY.md). A
request that waits is not measured by them.
Each completed request feeds every candidate that predicted it and its `QualityWindow`,
once the last of its shadows has ended (a request often completes before a background
prediction of it, which then learns from it in the learning worker).
While nothing is chosen, a request waits for nothing at all.

The choice is the candidate whose tau-b has the highest lower confidence bound, if that
bound is above 0; otherwise "none": every request gets the same `fallback_tokens`, so a
length-ordered policy ties everywhere and serves by arrival (FCFS, aging included).
A candidate's evidence is its own window once that holds `min_requests` prompts; before
that, its `prior()` (the held-out measurement shipped with its model) stands in, so a
shipped ranker schedules from the first request instead of after `min_requests`
completions of FCFS, and is dropped as soon as its own window says it ranks this
traffic no better than chance.
The choice is made again every
`recheck` completed requests. A chosen candidate stays until another's lower bound beats its own by `margin`, so the
choice does not flap between two equally good predictors.

With `state_path`, the windows and the choice are saved (JSON, atomically) at each recheck
and restored on start, so a restarted gateway schedules by the evidence it had instead of
running FCFS for `min_requests` completions again.

`observe` may run in another thread than `predict` (the gateway learns in its learning
worker): a lock keeps the windows and the pending predictions consistent.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lengthwise.predict.base import LengthRequest, Prediction, Predictor
from lengthwise.predict.batcher import Backlogged
from lengthwise.predict.prompt import read_prompt
from lengthwise.predict.self_query.query import UnpredictableRequest
from lengthwise.predict.worker import learning_worker
from lengthwise.core.io import atomic_write_json
from lengthwise.core.stats import RankQuality
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.predict.auto.quality import QualityWindow

log = logging.getLogger("lengthwise.predict.auto")

NONE = "none"


@dataclass
class _Candidate:
    predictor: Predictor
    window: QualityWindow
    predicted: int = 0
    #: Background predictions under way.
    shadows: int = 0


@dataclass
class _Measured:
    """One request's predictions by the candidates, until it has completed and its shadows have ended."""

    request: LengthRequest
    predictions: dict[str, Prediction] = field(default_factory=dict)
    #: Shadow predictions still under way.
    running: int = 0
    #: Its actual output tokens, once it has completed.
    actual: int | None = None


def _prompt_key(request: LengthRequest) -> str | None:
    """The key under which a request's prompt counts once in the quality windows."""
    try:
        return read_prompt(request).key
    except UnpredictableRequest:
        return None


class AutoPredictor(Predictor):
    """Predicts with the candidate that ranks best so far; see the module docstring."""

    name = "auto"

    def __init__(self, candidates: Sequence[Predictor], *, sample: float = 0.1, window: int = 200,
                 min_requests: int = 30, confidence: float = 0.95, margin: float = 0.02, recheck: int = 10,
                 fallback_tokens: float = FALLBACK_TOKENS, pending_limit: int = 10_000, max_shadows: int = 8,
                 rng: random.Random | None = None, state_path: Path | None = None) -> None:
        names = [c.name for c in candidates]
        if not candidates:
            raise ValueError("auto needs at least one candidate predictor")
        if len(set(names)) != len(names) or NONE in names:
            raise ValueError(f"auto candidates need distinct names other than {NONE!r}: {names}")
        if not 0 <= sample <= 1:
            raise ValueError("sample must be between 0 and 1")
        if min_requests < 3:
            raise ValueError("min_requests must be at least 3")
        self.candidates = {c.name: _Candidate(c, QualityWindow(window, confidence)) for c in candidates}
        self.costly = any(c.costly for c in candidates)
        self.sample = sample
        self.min_requests = min_requests
        self.margin = margin
        #: Choose again every this many completions: the taus cost O(W²) each.
        self.recheck = max(1, recheck)
        self.completed = 0
        self.fallback_tokens = float(fallback_tokens)
        self.pending_limit = pending_limit
        self.max_shadows = max_shadows
        self.choice = NONE
        self.requests = 0
        self._rng = rng or random.Random()
        #: request id → its candidates' predictions, until it has completed and its shadows have ended.
        self._pending: OrderedDict[str, _Measured] = OrderedDict()
        self._shadows: set[asyncio.Task[None]] = set()
        self._lock = threading.RLock()
        self.state_path = Path(state_path).expanduser() if state_path else None
        #: Pairs restored from `state_path` on start, over all candidates.
        self.restored = 0
        self._share: Callable[[dict[str, Any]], None] | None = None
        if self.state_path is not None:
            self._load(self.state_path)
        self._choose()  # a candidate's prior may be enough to choose it before any request

    async def predict(self, request: LengthRequest) -> Prediction:
        self.requests += 1
        chosen = self.candidates.get(self.choice)
        measured = _Measured(request)
        self._remember(request.request_id, measured)
        background = replace(request, background=True)  # shares what was read of the request
        for c in self.candidates.values():
            if c is not chosen and (not c.predictor.costly or self._engine_has_room(request, c)):
                c.shadows += 1
                measured.running += 1
                task = asyncio.create_task(self._shadow(c, background, measured))
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        if chosen is None:
            return Prediction(self.fallback_tokens, f"{self.name}:{NONE}", raw=self.fallback_tokens)
        chosen.predicted += 1
        prediction = measured.predictions[chosen.predictor.name] = await chosen.predictor.predict(request)
        return prediction

    def _engine_has_room(self, request: LengthRequest, c: _Candidate) -> bool:
        """Whether a costly candidate measures this request: nothing waits for it, fewer than
        `max_shadows` of the candidate's run, and it falls in the sample."""
        return request.background and c.shadows < self.max_shadows and self._rng.random() < self.sample

    async def _shadow(self, c: _Candidate, request: LengthRequest, measured: _Measured) -> None:
        """A candidate's prediction, measured only; the last shadow of a request that has completed
        meanwhile hands it to the learning worker."""
        try:
            measured.predictions[c.predictor.name] = await c.predictor.predict(request)
            c.predicted += 1
        except Backlogged:  # the candidate declined: it is not measured on this request
            pass
        except Exception:  # predictors never raise, by contract; a buggy one must not go unnoticed
            log.exception("auto: candidate %s raised", c.predictor.name)
        finally:
            c.shadows -= 1
            with self._lock:
                measured.running -= 1
                last = not measured.running and measured.actual is not None and \
                    self._pending.pop(request.request_id, None) is measured
            if last:
                learning_worker().submit(self._learn, measured)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Feed each candidate that predicted this request (once its shadows have ended); every
        `recheck` completions, choose again."""
        with self._lock:
            measured = self._pending.get(request.request_id)
            if measured is None:
                return
            measured.actual = actual_tokens
            if measured.running:  # its last shadow learns from it
                return
            del self._pending[request.request_id]
        self._learn(measured)

    def _learn(self, measured: _Measured) -> None:
        assert measured.actual is not None
        key = _prompt_key(measured.request)
        pairs = {name: (p.tokens, float(measured.actual)) for name, p in measured.predictions.items()}
        for name, p in measured.predictions.items():
            try:
                self.candidates[name].predictor.observe(measured.request, p, measured.actual)
            except Exception:  # one candidate's bug must not stop the others learning
                log.exception("auto: candidate %s failed to observe", name)
        self._measure(pairs, key)
        if self._share is not None:
            self._share({"pairs": pairs, "key": key})

    def _measure(self, pairs: dict[str, tuple[float, float]], key: str | None) -> None:
        """One completed request's (predicted, actual) per candidate into the windows (its prompt `key`
        counted once); every `recheck` completions, choose again."""
        with self._lock:
            for name, (predicted, actual) in pairs.items():
                if name in self.candidates:
                    self.candidates[name].window.add(predicted, actual, key)
            self.completed += 1
            recheck = self.completed % self.recheck == 0
        if recheck:
            with self._lock:
                self._choose()
            self._save()

    def share_with(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """Share each completion's (predicted, actual) per candidate, and what each candidate shares."""
        self._share = sink
        for name, c in self.candidates.items():
            c.predictor.share_with(functools.partial(_from_candidate, sink, name))

    def absorb(self, evidence: dict[str, Any]) -> None:
        """Another replica's completion: its pairs into the windows (so N replicas fill them N times as
        fast), or a candidate's own evidence to that candidate."""
        if "candidate" in evidence:
            c = self.candidates.get(evidence["candidate"])
            if c is not None:
                c.predictor.absorb(evidence["evidence"])
            return
        pairs = {name: (float(p), float(a)) for name, (p, a) in evidence["pairs"].items()}
        self._measure(pairs, evidence.get("key"))

    async def aclose(self) -> None:
        """Stop the shadow predictions, save the evidence since the last recheck (with `state_path`),
        then close every candidate."""
        for task in self._shadows:
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
        self._save()
        await asyncio.gather(*(c.predictor.aclose() for c in self.candidates.values()))

    def qualities(self) -> dict[str, RankQuality]:
        with self._lock:
            return {name: c.window.quality() for name, c in self.candidates.items()}

    def evidence(self) -> dict[str, tuple[str, RankQuality]]:
        """Per candidate, what the choice rests on: ("window", its own measurement) once it holds
        `min_requests` prompts, else ("prior", the shipped held-out one) if it has one."""
        with self._lock:
            return {name: self._evidence(c) for name, c in self.candidates.items()}

    def _evidence(self, c: _Candidate) -> tuple[str, RankQuality]:
        own, prior = c.window.quality(), c.predictor.prior()
        return ("window", own) if own.n >= self.min_requests or prior is None else ("prior", prior)

    def status(self) -> dict[str, Any]:
        """The choice and its evidence, JSON-able (for /lengthwise/status and the metrics)."""
        with self._lock:
            return self._status()

    def _status(self) -> dict[str, Any]:
        return {
            "choice": self.choice,
            "requests": self.requests,
            "sample": self.sample,
            "min_requests": self.min_requests,
            "state": str(self.state_path) if self.state_path else None,
            "restored": self.restored,
            "candidates": {name: self._candidate_status(c) for name, c in self.candidates.items()},
        }

    def _candidate_status(self, c: _Candidate) -> dict[str, Any]:
        detail, prior = c.predictor.status(), c.predictor.prior()
        return {**c.window.quality().to_dict(), "costly": c.predictor.costly,
                "prior": prior.to_dict() if prior is not None else None,
                "evidence": self._evidence(c)[0],
                "sampled_fraction": round(c.predicted / self.requests, 4) if self.requests else 0.0,
                **({"detail": detail} if detail is not None else {})}

    def _remember(self, request_id: str, measured: _Measured) -> None:
        with self._lock:
            self._pending[request_id] = measured
            while len(self._pending) > self.pending_limit:  # requests that never completed
                self._pending.popitem(last=False)

    def _choose(self) -> None:
        bounds = {name: q.low for name, (basis, q) in self.evidence().items()
                  if (basis == "prior" or q.n >= self.min_requests) and q.significant and q.low is not None}
        best = max(bounds, key=bounds.__getitem__, default=NONE)
        incumbent = bounds.get(self.choice)
        if incumbent is not None and best != self.choice and bounds[best] < incumbent + self.margin:
            best = self.choice
        if best != self.choice:
            evidence = "; ".join(f"{name} {basis} {q.to_dict()}" for name, (basis, q) in self.evidence().items())
            log.info("auto predictor: %s → %s (%s)", self.choice, best, evidence)
            self.choice = best

    def _load(self, path: Path) -> None:
        """Restore the saved windows and choice, then choose at once from that evidence.

        An unreadable state only costs the warm start, so it is logged, never raised.
        """
        try:
            saved = json.loads(path.read_text())
            windows = {name: [(float(p), float(a), *key) for p, a, *key in entries]
                       for name, entries in saved["windows"].items()}
            choice = str(saved.get("choice", NONE))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("auto predictor: cannot read state %s (%s); starting empty", path, e)
            return
        unknown = sorted(set(windows) - set(self.candidates))
        if unknown:
            log.info("auto predictor: state %s has evidence for candidates not configured now, ignored: %s",
                     path, ", ".join(unknown))
        for name, c in self.candidates.items():
            c.window.extend(windows.get(name, ()))
            self.restored += len(c.window)
        if choice in self.candidates:
            self.choice = choice  # the incumbent keeps its `margin` across the restart
        self._choose()
        log.info("auto predictor: restored %d pairs from %s; choice %s", self.restored, path, self.choice)

    def _save(self) -> None:
        """Write windows and choice to `state_path` atomically: a crash mid-write keeps the old file."""
        if self.state_path is None:
            return
        with self._lock:
            state = {"choice": self.choice, "windows": {name: c.window.entries() for name, c in self.candidates.items()}}
        try:
            atomic_write_json(self.state_path, state)
        except OSError as e:
            log.warning("auto predictor: cannot save state to %s: %s", self.state_path, e)


def _from_candidate(sink: Callable[[dict[str, Any]], None], name: str, evidence: dict[str, Any]) -> None:
    sink({"candidate": name, "evidence": evidence})
