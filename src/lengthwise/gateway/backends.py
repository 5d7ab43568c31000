"""The backend pool: health, served models, and routing by predicted work with prefix affinity.

A request goes to its prompt prefix's "home" backend (rendezvous hashing, so the
engine's prefix cache keeps serving that prefix) unless the home has more than
`slack_tokens` more predicted work outstanding than the least loaded backend; then it
goes to the least loaded one. A backend failing its health check leaves the pool and
rejoins when a check passes again.

An engine can answer /health while it no longer completes anything (vLLM's /health only
asks whether the engine core died, not whether it is stuck). So when a backend's requests
in flight have all been silent for `stall_timeout_s`, the check also sends it a one-token
completion, and a backend that cannot finish that in time leaves the pool too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("lengthwise.gateway")


@dataclass(eq=False)
class Backend:
    url: str
    index: int
    healthy: bool = True
    #: Model ids from its /v1/models; None until it answered once.
    models: frozenset[str] | None = None
    model_cards: list[dict[str, Any]] = field(default_factory=list)
    #: Requests routed here and not finished (waiting in the gateway or in flight).
    assigned: int = 0
    #: Their predicted output tokens: the work the router balances.
    outstanding_tokens: float = 0.0
    #: Requests routed here and not sent yet (being predicted or queued in the gateway).
    waiting: int = 0
    #: Requests sent upstream whose response has not ended.
    inflight: int = 0
    #: The other gateway replicas' requests in flight here (priority mode with Redis; else 0).
    peer_inflight: int = 0
    #: When the backend last showed it works (monotonic seconds): a response's headers or bytes,
    #: a one-token completion, or nothing in flight at a health check.
    last_progress: float = field(default_factory=time.monotonic)

    def progressed(self) -> None:
        self.last_progress = time.monotonic()

    def serves(self, model: str | None) -> bool:
        return model is None or self.models is None or model in self.models


def affinity_key(endpoint: str, body: dict[str, Any], chars: int) -> str:
    """The first `chars` characters of the prompt, where prefix caches share work."""
    if endpoint == "chat":
        parts: list[str] = []
        size = 0
        for message in body["messages"]:
            content = message.get("content")
            text = content if isinstance(content, str) else repr(content)
            parts.append(text)
            size += len(text)
            if size >= chars:
                break
        return "\x00".join(parts)[:chars]
    prompt = body["prompt"]
    return (prompt if isinstance(prompt, str) else repr(prompt))[:chars]


class BackendPool:
    def __init__(
        self,
        urls: Collection[str],
        *,
        slack_tokens: float,
        on_down: Callable[[Backend], None] | None = None,
        stall_timeout_s: float | None = None,
    ) -> None:
        self.backends = [Backend(url, i) for i, url in enumerate(urls)]
        self.slack_tokens = slack_tokens
        self.on_down = on_down
        #: Silence of all requests in flight after which a health check also asks for a one-token
        #: completion (None: never; the gateway must then report progress, `Backend.progressed`).
        self.stall_timeout_s = stall_timeout_s

    def __len__(self) -> int:
        return len(self.backends)

    def choose(self, model: str | None, affinity: str = "", exclude: Collection[Backend] = ()) -> Backend | None:
        """The backend for a new request; unhealthy ones only when no healthy one serves the model."""
        serving = [b for b in self.backends if b not in exclude and b.serves(model)]
        candidates = [b for b in serving if b.healthy] or serving
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        least = min(candidates, key=lambda b: (b.outstanding_tokens, b.assigned))
        home = max(candidates, key=lambda b: _weight(affinity, b.url))
        return home if home.outstanding_tokens - least.outstanding_tokens <= self.slack_tokens else least

    def model_exists(self, model: str | None) -> bool:
        """False only when every backend listed its models and none has this one."""
        if model is None or any(b.models is None for b in self.backends):
            return True
        return any(model in b.models for b in self.backends if b.models is not None)

    def model_list(self) -> dict[str, Any]:
        """The union of the backends' /v1/models, healthy ones first."""
        seen: dict[str, dict[str, Any]] = {}
        for backend in sorted(self.backends, key=lambda b: not b.healthy):
            for card in backend.model_cards:
                seen.setdefault(card["id"], card)
        return {"object": "list", "data": list(seen.values())}

    def assign(self, backend: Backend, tokens: float) -> None:
        backend.assigned += 1
        backend.outstanding_tokens += tokens

    def unassign(self, backend: Backend, tokens: float) -> None:
        backend.assigned -= 1
        backend.outstanding_tokens = max(0.0, backend.outstanding_tokens - tokens) if backend.assigned else 0.0

    def mark_down(self, backend: Backend, reason: str) -> None:
        if backend.healthy:
            backend.healthy = False
            log.warning("backend %d (%s) left the pool: %s", backend.index, backend.url, reason)
            if self.on_down is not None:
                self.on_down(backend)

    def mark_up(self, backend: Backend) -> None:
        if not backend.healthy:
            backend.healthy = True
            log.warning("backend %d (%s) rejoined the pool", backend.index, backend.url)

    async def probe(self, backend: Backend, session: aiohttp.ClientSession, health_path: str,
                    headers: dict[str, str], timeout_s: float) -> None:
        """One health check (health path, /v1/models, and a one-token completion if the backend's
        requests are all stalled); marks the backend up or down."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with session.get(backend.url + health_path, headers=headers, timeout=timeout) as r:
                if r.status != 200:
                    raise ValueError(f"{health_path} answered HTTP {r.status}")
            async with session.get(backend.url + "/v1/models", headers=headers, timeout=timeout) as r:
                if r.status != 200:
                    raise ValueError(f"/v1/models answered HTTP {r.status}")
                cards = (await r.json(content_type=None))["data"]
            backend.models = frozenset(card["id"] for card in cards)
            backend.model_cards = cards
        except _CHECK_FAILURES as exc:
            self.mark_down(backend, f"health check failed: {_describe(exc)}")
            return
        silent_s = self._silent_s(backend)
        if silent_s is not None:
            try:
                await _complete_one_token(backend, session, headers, timeout)
            except _CHECK_FAILURES as exc:
                self.mark_down(backend, f"{backend.inflight} request(s) in flight silent for {silent_s:.0f} s, and a "
                                        f"one-token completion failed: {_describe(exc)}")
                return
        self.mark_up(backend)

    def _silent_s(self, backend: Backend) -> float | None:
        """How long the backend's requests in flight have all been silent, if longer than the stall timeout."""
        if backend.inflight == 0:
            backend.progressed()  # nothing is awaited from it: nothing is late
        silent_s = time.monotonic() - backend.last_progress
        return silent_s if self.stall_timeout_s is not None and silent_s > self.stall_timeout_s else None

    async def probe_all(self, session: aiohttp.ClientSession, health_path: str,
                        headers: dict[str, str], timeout_s: float) -> None:
        await asyncio.gather(*(self.probe(b, session, health_path, headers, timeout_s) for b in self.backends))


_CHECK_FAILURES = (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError)


async def _complete_one_token(backend: Backend, session: aiohttp.ClientSession, headers: dict[str, str],
                              timeout: aiohttp.ClientTimeout) -> None:
    """Does the engine still complete requests? (A 4xx is an answer too: the request, not the engine.)"""
    body: dict[str, object] = {"prompt": "ping", "max_tokens": 1}
    if backend.models:
        body["model"] = min(backend.models)
    async with session.post(backend.url + "/v1/completions", json=body, headers=headers, timeout=timeout) as r:
        await r.read()
        if r.status >= 500:
            raise ValueError(f"a one-token completion answered HTTP {r.status}")
    backend.progressed()


def _describe(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)[:300]


def _weight(key: str, url: str) -> bytes:
    return hashlib.blake2b(f"{url}\x00{key}".encode(), digest_size=8).digest()
