"""The gateway's predictor, built from the `--predictor` spec with the gateway's own parts."""

from __future__ import annotations

import httpx

from lengthwise.gateway.config import GatewayConfig
from lengthwise.predict.base import Predictor


def build_predictor(config: GatewayConfig, client: httpx.AsyncClient, priority: int | None,
                    spec: str | None = None) -> Predictor:
    """`spec` (default: `config.predictor`) from the predictor registry; engine-querying predictors get the
    gateway's HTTP client (with the backend key) and send their queries at `priority`, ahead of real requests."""
    from lengthwise.predict.registry import make_predictor

    return make_predictor(spec or config.predictor, client=client, priority=priority,
                          fallback_tokens=config.fallback_tokens)
