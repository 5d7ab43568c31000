"""The gateway: its parts put together, the small endpoints, and its life cycle.

The completion endpoints' request flow is `completions.Completions`; they are served
ahead of Starlette's router (`asgi.CompletionsFirst`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lengthwise.core.policy import Policy, make_policy
from lengthwise.core.tokens import count_tokens
from lengthwise.gateway.asgi import CompletionsFirst, http_exception
from lengthwise.gateway.auth import ApiKeys
from lengthwise.gateway.backends import Backend, BackendPool
from lengthwise.gateway.completions import Completions
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.backend_auth import BackendCredentials
from lengthwise.gateway.credentials import redacted
from lengthwise.gateway.errors import GatewayError
from lengthwise.gateway.metrics import GatewayMetrics
from lengthwise.gateway.predictors import build_predictor
from lengthwise.gateway.preemptor import Preemptor
from lengthwise.gateway.priority import PriorityMap
from lengthwise.gateway.scheduler import Scheduler
from lengthwise.gateway.shared_inflight import SharedInflight
from lengthwise.gateway.shared_learning import SharedLearning
from lengthwise.gateway.shared_queue import SHARED_EPOCH, SharedQueue, connect
from lengthwise.gateway.shared_scheduler import SharedScheduler
from lengthwise.predict.base import Predictor

log = logging.getLogger("lengthwise.gateway")

#: A Redis call slower than this counts as Redis being away (the local fallback takes over).
REDIS_TIMEOUT_S = 2.0


class Gateway:
    """The gateway's parts and endpoints; `.app` is the ASGI app to serve.

    `predictor`, `cheap_predictor` and `policy` override the ones `config` names (tests, embedding).
    """

    def __init__(self, config: GatewayConfig, *, predictor: Predictor | None = None,
                 policy: Policy | None = None, cheap_predictor: Predictor | None = None) -> None:
        self.config = config
        self.policy = policy or make_policy(config.policy)
        #: Redis shared with the other replicas, if any: their clocks then all count from SHARED_EPOCH.
        self.redis = connect(config.redis_url, REDIS_TIMEOUT_S) if config.redis_url else None
        #: This process's name among the replicas.
        self.replica = secrets.token_hex(4)
        self._epoch = time.monotonic() - (time.time() - SHARED_EPOCH if self.redis else 0.0)
        self.pool = BackendPool(config.backend_urls, slack_tokens=config.affinity_slack_tokens,
                                on_down=self._backend_down if config.queues else None,
                                stall_timeout_s=config.stall_timeout_s)
        self.scheduler = self._make_scheduler() if config.queues else None
        #: Userinfo of the backend URLs, sent as Basic auth unless a key is set (never logged).
        self.credentials = BackendCredentials(config.backends)
        #: The engine's priority scale (prediction queries use it in every mode).
        self.engine_priority = PriorityMap.for_config(config)
        self.metrics = GatewayMetrics(self.pool)
        self._backend_headers = {"authorization": f"Bearer {config.backend_api_key}"} \
            if config.backend_api_key else {}
        #: The predictor's own client (httpx, as the predictors take it), with the backend key. It sends
        #: through aiohttp: httpx's own transport cost 1.2 ms of event-loop CPU per self-prediction
        #: query, aiohttp under httpx 0.34 ms (the queries of 10% of requests, while `auto` measures).
        self._predict_client = None if predictor else httpx.AsyncClient(
            headers=self._backend_headers, timeout=config.prediction_timeout_s, auth=self.credentials.httpx_auth(),
            transport=AiohttpTransport(client=_predict_session))
        urgent = self.engine_priority.urgent if self.engine_priority else None
        self.predictor: Predictor = predictor or build_predictor(config, self._predict_client, urgent)
        #: The query-window rule's cheap predictor (`--query-window`); None: the rule is off.
        self.cheap_predictor = None if not config.query_window else \
            cheap_predictor or build_predictor(config, self._predict_client, urgent, config.cheap_predictor)
        if self.cheap_predictor is not None and self.cheap_predictor.costly:
            raise ValueError(f"--cheap-predictor {self.cheap_predictor.name} spends engine time: the query window "
                             "needs one that does not (e.g. learned:wrap=none, prompt-length)")
        self.metrics.watch_predictor(self.predictor.status)
        self.learning = SharedLearning(self.redis, self.replica, self.predictor) if self.redis else None
        if self.redis is not None:
            self.metrics.watch_shared(self._shared_status)
        self._api_keys = ApiKeys(config.api_keys)
        self._session: aiohttp.ClientSession | None = None
        #: Preempts long running requests for short waiting ones (`--preempt`, queue modes).
        self.preemptor = Preemptor(config.preempt, self.policy, self.scheduler, self.metrics) \
            if config.preempt is not None and self.scheduler is not None else None
        self.completions = Completions(config=config, policy=self.policy, pool=self.pool, scheduler=self.scheduler,
                                       metrics=self.metrics, predictor=self.predictor,
                                       engine_priority=self.engine_priority, api_keys=self._api_keys,
                                       clock=self.clock, preemptor=self.preemptor,
                                       cheap_predictor=self.cheap_predictor)
        starlette = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
                Route("/lengthwise/status", self._status, methods=["GET"]),
            ],
            lifespan=self._lifespan,
            exception_handlers={HTTPException: http_exception},
        )
        #: The ASGI app to serve.
        self.app = CompletionsFirst(self.completions, starlette)

    def clock(self) -> float:
        """Seconds since the gateway started (with Redis: since SHARED_EPOCH, the same for every
        replica): job arrivals and policy keys use it."""
        return time.monotonic() - self._epoch

    def _make_scheduler(self) -> Scheduler:
        config = self.config
        if self.redis is None:
            return Scheduler(self.policy, config.max_inflight, config.max_queue, self.clock, config.query_window)
        assert config.redis_url is not None
        queue = SharedQueue(self.redis, self.replica, config.max_inflight, config.redis_lease_s)
        return SharedScheduler(self.policy, config.max_inflight, config.max_queue, self.clock, queue, self.pool,
                               redacted(config.redis_url))

    def _backend_down(self, backend: Backend) -> None:
        assert self.scheduler is not None
        self.scheduler.evict(backend)

    # ---- life cycle -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Open the backend connections and start the health checks; on shutdown, undo both, stop
        the background predictions and close the predictor (it may save what it learned), then
        its HTTP client."""
        async with contextlib.AsyncExitStack() as stack:
            # Admission is the scheduler's job; the connection bound per backend only keeps a burst
            # from opening sockets without limit. Idle connections close before uvicorn's 5 s
            # keep-alive would close them under us.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.config.max_upstream_connections,
                                             keepalive_timeout=4.0)
            session = await stack.enter_async_context(aiohttp.ClientSession(
                connector=connector, auto_decompress=False, middlewares=self.credentials.aiohttp_middlewares()))
            self._session = self.completions.session = session
            if self._predict_client is not None:
                stack.push_async_callback(self._predict_client.aclose)
            stack.push_async_callback(self.predictor.aclose)
            if self.cheap_predictor is not None:
                stack.push_async_callback(self.cheap_predictor.aclose)
            stack.push_async_callback(self.completions.predicting.aclose)
            await asyncio.to_thread(count_tokens, "load the tokenizer")  # not on the first request's loop turn
            await self._probe_all()
            stack.push_async_callback(_stopped, asyncio.create_task(self._health_loop()))
            if self.redis is not None:
                stack.push_async_callback(self.redis.aclose)
            if isinstance(self.scheduler, SharedScheduler):
                stack.push_async_callback(_stopped, asyncio.create_task(self.scheduler.run()))
            if self.learning is not None:
                stack.push_async_callback(_stopped, asyncio.create_task(self.learning.run()))
            if self.redis is not None and not self.config.queues and self.config.backend_seats:
                inflight = SharedInflight(self.redis, self.replica, self.pool)
                stack.push_async_callback(_stopped, asyncio.create_task(inflight.run()))
            log.info("gateway ready: %d backend(s), mode %s, policy %s, predictor %s", len(self.pool),
                     self.config.mode, self.policy.name, self.predictor.name)
            yield

    async def _probe_all(self) -> None:
        assert self._session is not None
        await self.pool.probe_all(self._session, self.config.health_path, self._backend_headers,
                                  self.config.health_timeout_s)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self._probe_all()
            except Exception:  # a bug in a check must not end the checks
                log.exception("health check round failed")

    # ---- small endpoints ----------------------------------------------------------------

    def _denied(self, request: Request) -> Response | None:
        """The 401 for a request without a valid key, when keys are configured; else None."""
        try:
            self._api_keys.check(request.scope)
        except GatewayError as e:
            return e.response()
        return None

    async def _models(self, request: Request) -> Response:
        if denied := self._denied(request):
            return denied
        if not any(b.model_cards for b in self.pool.backends):
            await self._probe_all()
        listing = self.pool.model_list()
        if not listing["data"]:
            return GatewayError(503, "no backend answered /v1/models", code="no_backend").response()
        return JSONResponse(listing)

    async def _health(self, request: Request) -> Response:
        healthy = sum(b.healthy for b in self.pool.backends)
        return JSONResponse({"status": "ok" if healthy else "unavailable", "healthy_backends": healthy,
                             "backends": len(self.pool)}, status_code=200 if healthy else 503)

    async def _metrics(self, request: Request) -> Response:
        """Prometheus metrics; with API keys configured, only for a caller with a key (they name backends)."""
        if denied := self._denied(request):
            return denied
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def _status(self, request: Request) -> Response:
        """What schedules: mode, policy, predictor, and the predictor's own status if it has one
        (an automatic choice gives its evidence there). With API keys configured, only with a key."""
        if denied := self._denied(request):
            return denied
        status = self.predictor.status()
        window = None if self.cheap_predictor is None else \
            {"size": self.config.query_window, "cheap_predictor": self.cheap_predictor.name}
        return JSONResponse({"mode": self.config.mode, "policy": self.policy.name, "predictor": self.predictor.name,
                             "status": status, "query_window": window, "redis": self._shared_status()})

    def _shared_status(self) -> dict[str, Any] | None:
        """What this replica shares through Redis, and whether it can now; None without Redis."""
        if self.learning is None:
            return None
        assert self.config.redis_url is not None
        queue = self.scheduler.status() if isinstance(self.scheduler, SharedScheduler) else None
        return {"url": redacted(self.config.redis_url), "replica": self.replica, "queue": queue,
                "learning": self.learning.status()}


def _predict_session() -> aiohttp.ClientSession:
    """The prediction queries' connections, opened on the first query (in the running loop): no bound
    but the predictors' own, idle ones closed before a backend's 5 s keep-alive would close them."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0))


async def _stopped(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has ended."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
