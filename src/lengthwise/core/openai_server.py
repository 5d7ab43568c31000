"""Questions any OpenAI-compatible server answers, asked the same way by the benchmark and the simulator's profiler."""

from __future__ import annotations

import httpx


def served_model(url: str) -> str:
    """The first model an OpenAI-compatible server lists at /v1/models."""
    try:
        resp = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=10.0)
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise RuntimeError(f"could not read the model from {url}/v1/models ({exc}); pass --model") from None
