"""SelfPredictor: the serving model predicts its own answer length (the seed's idea).

The prediction query is the real request plus a postfix, sent to the same engine
just before the real request, so the engine's prefix cache makes the real request's
prefill nearly free. The answer's top logprobs give a distribution over lengths
(see `distribution`), whose expectation is the prediction.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from lengthwise.predict.base import LengthRequest, Prediction, PredictionCost, Predictor
from lengthwise.predict.self_query.distribution import (
    LengthDistribution,
    label_distribution,
    number_distribution,
    positions_from_chat,
    positions_from_completion,
)
from lengthwise.predict.self_query.parse import ParsedLength, parse_label, parse_length
from lengthwise.predict.self_query.postfix import Postfix, get_postfix
from lengthwise.predict.prompt import read_prompt
from lengthwise.predict.self_query.query import ENDPOINT_PATHS, UnpredictableRequest, build_query
from lengthwise.core.tokens import FALLBACK_TOKENS
from lengthwise.core.usage import cached_tokens

QUANTILES = (0.1, 0.5, 0.9)
#: Longer prompts are not self-predicted: beyond any context window, and a query (sent
#: as JSON encoded on the event loop) that costs what the prompt weighs.
MAX_PROMPT_TOKENS = 131_072


@dataclass(frozen=True)
class SelfQuery:
    """Everything one prediction query returned, before it becomes a Prediction."""

    text: str
    parsed: ParsedLength
    distribution: LengthDistribution | None
    max_tokens: int
    finish_reason: str | None
    latency_s: float
    usage: dict[str, Any]

    @property
    def cost(self) -> PredictionCost:
        return PredictionCost(
            latency_s=self.latency_s,
            prompt_tokens=int(self.usage.get("prompt_tokens") or 0),
            completion_tokens=int(self.usage.get("completion_tokens") or 0),
            cached_tokens=cached_tokens(self.usage) or 0,
        )


class SelfPredictor(Predictor):
    """Asks the serving engine how long its answer will be; never raises from `predict`.

    `priority` is sent with the query so it jumps the engine's queue (vLLM: lower is
    served first; SGLang by default the opposite; None sends no priority).
    """

    #: Every prediction is a request to the engine.
    costly = True

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str | None = None,
        model: str | None = None,
        postfix: str | Postfix = "seed",
        *,
        timeout_s: float = 10.0,
        max_tokens_limit: int = 512,
        fallback_tokens: float = FALLBACK_TOKENS,
        query_max_tokens: int = 8,
        top_logprobs: int = 20,
        priority: int | None = -1_000_000,
        max_prompt_tokens: int | None = MAX_PROMPT_TOKENS,
    ) -> None:
        self.client = client
        self.base_url = base_url
        self.model = model
        self.postfix = get_postfix(postfix)
        self.timeout_s = timeout_s
        self.max_tokens_limit = max_tokens_limit
        self.fallback_tokens = fallback_tokens
        self.query_max_tokens = query_max_tokens
        self.top_logprobs = top_logprobs
        self.priority = priority
        self.max_prompt_tokens = max_prompt_tokens
        self.name = f"self:{self.postfix.name}"

    async def query(self, request: LengthRequest) -> SelfQuery:
        """Send the prediction query; raises UnpredictableRequest, httpx errors or TimeoutError."""
        base_url = request.backend or self.base_url
        if not base_url:
            raise UnpredictableRequest("no backend URL")
        if self.max_prompt_tokens is not None and read_prompt(request).tokens > self.max_prompt_tokens:
            raise UnpredictableRequest(f"prompt longer than {self.max_prompt_tokens} tokens")
        max_tokens = request.max_tokens or self.max_tokens_limit
        body = build_query(
            request,
            self.postfix.render(max_tokens),
            model=self.model,
            max_tokens=self.query_max_tokens,
            top_logprobs=self.top_logprobs,
            priority=self.priority,
        )
        started = time.perf_counter()
        async with asyncio.timeout(self.timeout_s):
            response = await self.client.post(base_url.rstrip("/") + ENDPOINT_PATHS[request.endpoint], json=body)
            response.raise_for_status()
            data = response.json()
        latency = time.perf_counter() - started
        choice = data["choices"][0]
        if request.endpoint == "chat":
            text = choice["message"].get("content") or ""
            positions = positions_from_chat(choice.get("logprobs"))
        else:
            text = choice.get("text") or ""
            positions = positions_from_completion(choice.get("logprobs"))
        if self.postfix.labels is None:
            parsed = parse_length(text)
            distribution = number_distribution(positions)
        else:
            parsed = parse_label(text, self.postfix.labels)
            distribution = label_distribution(positions, self.postfix.labels)
        return SelfQuery(
            text, parsed, distribution, max_tokens, choice.get("finish_reason"), latency, data.get("usage") or {}
        )

    def to_prediction(self, result: SelfQuery, prompt_tokens: int | None = None) -> Prediction:
        """Turn a query result into a Prediction (clipped to [1, max_tokens])."""
        features: dict[str, float] = {"max_tokens": float(result.max_tokens)}
        if prompt_tokens is not None:
            features["prompt_tokens"] = float(prompt_tokens)
        if result.parsed.value is not None:
            features["greedy"] = min(max(result.parsed.value, 1.0), result.max_tokens)
        if result.distribution is not None:
            dist = result.distribution.clipped(1.0, result.max_tokens)
            features.update(dist.summary())
            quantiles = {q: dist.quantile(q) for q in QUANTILES}
            tokens = dist.mean()
        elif result.parsed.value is not None:
            tokens = features["greedy"]
            quantiles = {}
            features["expect"] = tokens
        else:
            reason = result.parsed.reason or "unparseable answer"
            return self._fallback(reason, result.cost, features)
        return Prediction(tokens, self.name, quantiles, raw=tokens, cost=result.cost, features=features)

    async def predict(self, request: LengthRequest) -> Prediction:
        features: dict[str, float] = {}
        try:
            prompt_tokens = read_prompt(request).tokens
            features["prompt_tokens"] = float(prompt_tokens)
            result = await self.query(request)
        except UnpredictableRequest as exc:
            reason = str(exc)
        except TimeoutError:
            reason = f"timeout after {self.timeout_s:g}s"
        except httpx.HTTPStatusError as exc:
            reason = f"engine answered HTTP {exc.response.status_code}: {exc.response.text[:200]}"
        except Exception as exc:  # transport errors, malformed answers: never harm the request
            reason = f"{type(exc).__name__}: {exc}"[:300]
        else:
            return self.to_prediction(result, prompt_tokens)
        return self._fallback(reason, features=features)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        """Nothing to learn here; wrap in CalibratedPredictor to learn a mapping."""

    def _fallback(
        self, reason: str, cost: PredictionCost = PredictionCost(), features: dict[str, float] | None = None
    ) -> Prediction:
        return Prediction(
            self.fallback_tokens, self.name, fallback_reason=reason, cost=cost, features=features or {}
        )


__all__ = ["SelfPredictor", "SelfQuery"]
