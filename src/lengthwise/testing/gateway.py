"""The gateway and the stub engine inside a running event loop, and a predictor with known answers.

For tests, load tests and benchmarks:

    async with running_stub(latency_s=0.05) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=1)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: r.max_tokens)) as (gw, url):
            ...  # POST {url}/v1/chat/completions
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from lengthwise.core.stats import RankQuality
from lengthwise.testing.stub_backend import StubBackend
from lengthwise.gateway.app import Gateway
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.limits import guard
from lengthwise.gateway.server import serving
from lengthwise.predict.base import LengthRequest, Prediction, Predictor


@contextlib.asynccontextmanager
async def running_stub(**fields: Any) -> AsyncIterator[tuple[StubBackend, str]]:
    """A `StubBackend(**fields)` on a free loopback port: yields it and its base URL."""
    stub = StubBackend(**fields)
    async with serving(stub) as url:
        yield stub, url


@contextlib.asynccontextmanager
async def running_gateway(config: GatewayConfig, **overrides: Any) -> AsyncIterator[tuple[Gateway, str]]:
    """The gateway on a free loopback port (config.host/port are ignored), with its limits on clients
    as `lengthwise serve` has them: yields it and its base URL."""
    gateway = Gateway(config, **overrides)
    app, limits = guard(gateway.app, config)
    async with serving(app, **limits) as url:
        yield gateway, url


@dataclass
class FunctionPredictor(Predictor):
    """Predicts `fn(request)` tokens, after `delay_s`; records what it observed.

    `lambda r: r.max_tokens` makes an oracle for requests whose length is max_tokens.
    It raises whatever `fn` raises, to test the gateway's guard around predictors.
    """

    fn: Callable[[LengthRequest], float]
    name: str = "function"
    delay_s: float = 0.0
    #: Stands in for a predictor that spends engine time (see `Predictor.costly`).
    costly: bool = False
    #: Stands in for a shipped model's held-out measurement (see `Predictor.prior`).
    prior_quality: RankQuality | None = None
    observed: list[tuple[str, float, int]] = field(default_factory=list)

    def prior(self) -> RankQuality | None:
        return self.prior_quality

    async def predict(self, request: LengthRequest) -> Prediction:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        tokens = float(self.fn(request))
        return Prediction(tokens, self.name, raw=tokens)

    def observe(self, request: LengthRequest, prediction: Prediction, actual_tokens: int) -> None:
        self.observed.append((request.request_id, prediction.tokens, actual_tokens))
