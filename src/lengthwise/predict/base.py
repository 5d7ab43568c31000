"""The predictor interface shared by the gateway, the simulator and the benchmarks.

A predictor turns an OpenAI-style request into a `Prediction` of its output length.
It never raises to its caller: on any failure it returns a fallback prediction whose
`fallback_reason` says why, so a request is never harmed by its prediction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lengthwise.core.stats import RankQuality

Endpoint = Literal["chat", "completion"]


@dataclass(frozen=True)
class LengthRequest:
    """What a predictor sees: the endpoint kind and the request body as the client sent it."""

    endpoint: Endpoint
    body: dict[str, Any]
    request_id: str = ""
    #: Base URL of the backend the real request will go to; a predictor that queries
    #: an engine (self-prediction) must use it so the engine's prefix cache is shared.
    backend: str | None = None
    #: No one waits for this prediction: it is made only to learn from (nothing waited for
    #: a seat, or it measures a candidate that does not schedule). A predictor may do it at
    #: a lower priority, or decline it with `lengthwise.predict.batcher.Backlogged`.
    background: bool = False
    #: What predictors derive from the request once and share, such as its prompt as
    #: `lengthwise.predict.prompt.read_prompt` reads it; not part of the request's identity.
    derived: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_tokens(self) -> int | None:
        value = self.body.get("max_completion_tokens", self.body.get("max_tokens"))
        return value if isinstance(value, int) and value > 0 else None


@dataclass(frozen=True)
class PredictionCost:
    """What a prediction cost: wall time and the extra tokens it sent through the engine."""

    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Prediction:
    """Expected output tokens, with a spread, the source and the cost.

    `tokens` is what schedulers order by (already calibrated where a calibrator is
    attached); `raw` is the predictor's own uncalibrated value; `features` carries
    what a calibrator or a learned predictor may fit on.
    """

    tokens: float
    source: str
    quantiles: dict[float, float] = field(default_factory=dict)
    raw: float | None = None
    fallback_reason: str | None = None
    cost: PredictionCost = PredictionCost()
    features: dict[str, float] = field(default_factory=dict)

    @property
    def is_fallback(self) -> bool:
        return self.fallback_reason is not None


class Predictor(ABC):
    """Predicts output length; learns from completions if it can.

    What a caller may ask beyond `predict` has a default here, so no caller probes for it:
    `costly` (True when a prediction spends engine time: the self-query; a wrapper is costly
    when anything it wraps is), `status()` (what a status page shows; None: nothing),
    `prior()` (its offline held-out rank quality; None: unmeasured) and `aclose()`.
    """

    name: str
    costly: bool = False

    @abstractmethod
    async def predict(self, request: LengthRequest) -> Prediction:
        """Never raises: failures become a fallback `Prediction`."""
        ...

    @abstractmethod
    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Called once per completed request with its actual output tokens."""
        ...

    def status(self) -> dict[str, Any] | None:
        """What this predictor has chosen or learned, JSON-able; None when there is nothing to say."""
        return None

    def prior(self) -> RankQuality | None:
        """How well it ranked held-out prompts offline (the measurement shipped with its model), so that
        `auto` can use it before it has measured the predictor itself; None: nothing was measured."""
        return None

    def share_with(self, sink: Callable[[dict[str, Any]], None]) -> None:
        """From now on, give `sink` the evidence learned from each completion this predictor observes:
        JSON-able and free of prompt text, for its twins in other gateway replicas to `absorb` (shared
        learning, lengthwise.gateway.shared_learning). `sink` may be called from the learning worker.
        Default: nothing to share."""

    def absorb(self, evidence: dict[str, Any]) -> None:
        """Learn from evidence a twin in another replica shared (`share_with`); runs in the learning
        worker. Default: nothing to learn."""

    async def aclose(self) -> None:
        """Release what the predictor holds (clients, state to save)."""
