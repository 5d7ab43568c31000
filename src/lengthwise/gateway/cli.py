"""`lengthwise serve`: run the gateway in front of one or more engines."""

from __future__ import annotations

import dataclasses
import gc
import logging
from typing import Annotated

import typer

from lengthwise.gateway.config import GatewayConfig, PreemptSettings
from lengthwise.gateway.credentials import redacted

_D = {f.name: f.default for f in dataclasses.fields(GatewayConfig)}


def serve(
    backend: Annotated[list[str], typer.Option("--backend", "-b", help="Engine base URL, without /v1 (repeatable).")],
    engine: Annotated[str, typer.Option(help="vllm | sglang | openai (no priority field: queue mode only).")] =
        _D["engine"],
    mode: Annotated[str, typer.Option(help="priority: forward at once with an engine priority; queue: hold and "
                                           "admit by policy; both.")] = _D["mode"],
    policy: Annotated[str, typer.Option(help="Policy spec, e.g. sst+deadline:k=1.5, sst, sjf, fcfs, "
                                                "sjf+aging:rate=2,max_wait=30.")] =
        _D["policy"],
    predictor: Annotated[str, typer.Option(help="Predictor spec, e.g. self, self:postfix=fewshot, constant:tokens=200, "
                                                "prompt-length; calibration=PATH learns online.")] = _D["predictor"],
    max_inflight: Annotated[int, typer.Option(help="Queue mode: requests in flight per backend.")] =
        _D["max_inflight"],
    max_queue: Annotated[int, typer.Option(help="Queue mode: waiting requests before 429.")] = _D["max_queue"],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = _D["host"],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = _D["port"],
    api_key: Annotated[list[str] | None, typer.Option(
        "--api-key", envvar="LENGTHWISE_API_KEY",
        help="Client key accepted as 'Authorization: Bearer KEY' (repeatable); none: no authentication.")] = None,
    backend_api_key: Annotated[str | None, typer.Option(
        envvar="LENGTHWISE_BACKEND_API_KEY",
        help="Key sent to the backends; unset: the client's Authorization is forwarded.")] = None,
    sglang_low_first: Annotated[bool, typer.Option(
        help="SGLang runs with --schedule-low-priority-values-first.")] = _D["sglang_low_first"],
    priority_scale: Annotated[float, typer.Option(help="Policy key × this = engine priority.")] =
        _D["priority_scale"],
    prediction_timeout: Annotated[float, typer.Option(help="Seconds before a prediction falls back.")] =
        _D["prediction_timeout_s"],
    lazy_prediction: Annotated[bool, typer.Option(
        help="With a free seat, send a request at once and predict it in the background, only to learn.")] =
        _D["lazy_prediction"],
    backend_seats: Annotated[int, typer.Option(
        help="Priority mode: requests each backend runs at once (vLLM's --max-num-seqs), below which nothing "
             "waits. 0: unknown, always wait for the prediction.")] = _D["backend_seats"],
    fallback_tokens: Annotated[float, typer.Option(help="Predicted tokens when a prediction fails.")] =
        _D["fallback_tokens"],
    max_body_bytes: Annotated[int, typer.Option(help="Larger request bodies get 413.")] = _D["max_body_bytes"],
    max_header_bytes: Annotated[int, typer.Option(help="Larger request headers (in all) get 431.")] =
        _D["max_header_bytes"],
    health_interval: Annotated[float, typer.Option(help="Seconds between backend health checks.")] =
        _D["health_interval_s"],
    health_path: Annotated[str, typer.Option(help="Backend path answering 200 when healthy.")] = _D["health_path"],
    read_timeout: Annotated[float, typer.Option(help="Longest silence (s) from a backend mid-response.")] =
        _D["read_timeout_s"],
    stall_timeout: Annotated[float, typer.Option(
        help="Seconds all of a backend's requests may be silent before its health check sends a one-token "
             "completion (failing: the backend leaves the pool).")] = _D["stall_timeout_s"],
    affinity_slack: Annotated[float, typer.Option(
        help="Predicted tokens a prefix's backend may carry above the least loaded before requests spill over.")] =
        _D["affinity_slack_tokens"],
    max_upstream_connections: Annotated[int, typer.Option(
        help="Connections to one backend at most; more requests wait for one.")] = _D["max_upstream_connections"],
    header_timeout: Annotated[float, typer.Option(
        help="Seconds a client has to begin a request, and to finish its headers (else 408, closed).")] =
        _D["header_timeout_s"],
    body_timeout: Annotated[float, typer.Option(
        help="Seconds after the headers by which the whole body must have arrived (else 408, closed).")] =
        _D["body_timeout_s"],
    max_connections: Annotated[int, typer.Option(help="Client connections at most (beyond: 503).")] =
        _D["max_connections"],
    graceful_shutdown_timeout: Annotated[float, typer.Option(
        help="On SIGTERM, seconds to let requests finish before they are cut.")] = _D["graceful_shutdown_s"],
    redis: Annotated[str | None, typer.Option(
        help="Redis shared by several gateway replicas (redis://host:6379/0): one queue and one set of seats per "
             "backend, and shared learning (docs/SCALE_OUT.md).")] = None,
    redis_lease: Annotated[float, typer.Option(
        help="Seconds a seat's lease lasts unless renewed: a killed replica's seats come back after it.")] =
        _D["redis_lease_s"],
    preempt: Annotated[str | None, typer.Option(
        help="Queue modes, vLLM: preempt running requests for much shorter waiting ones and resume them as "
             "continuations, e.g. 'margin=2,max=1,early=0.25' ('' for the defaults); unset: never.")] = None,
    query_window: Annotated[int, typer.Option(
        help="Queue modes: the query-window rule. W >= 1: waiting requests are ordered by --cheap-predictor; only "
             "the best W waiting for a backend are predicted by --predictor (the self-query, which caches the "
             "prompt on the engine), and only those are admitted, so each is admitted before the engine evicts "
             "its prompt. 0: off, every waiting request is predicted by --predictor on arrival.")] =
        _D["query_window"],
    cheap_predictor: Annotated[str, typer.Option(
        help="With --query-window: the predictor (no engine time) that orders requests outside the window, "
             "e.g. learned:wrap=none, prompt-length.")] = _D["cheap_predictor"],
    log_level: Annotated[str, typer.Option(help="debug | info | warning.")] = "info",
    access_log: Annotated[bool, typer.Option(help="uvicorn's access log (costs throughput).")] = False,
) -> None:
    """Run the OpenAI-compatible scheduling gateway in front of one or more engines."""
    from lengthwise.gateway.app import Gateway
    from lengthwise.gateway.limits import guard
    from lengthwise.gateway.server import run

    # Before the gateway is built: its predictor logs what it restores at construction.
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per prediction query otherwise
    try:
        config = GatewayConfig(
            backends=tuple(backend), engine=engine, mode=mode, policy=policy, predictor=predictor,  # type: ignore[arg-type]
            max_inflight=max_inflight, max_queue=max_queue, host=host, port=port, api_keys=tuple(api_key or ()),
            backend_api_key=backend_api_key, sglang_low_first=sglang_low_first, priority_scale=priority_scale,
            prediction_timeout_s=prediction_timeout, lazy_prediction=lazy_prediction, backend_seats=backend_seats,
            fallback_tokens=fallback_tokens,
            max_body_bytes=max_body_bytes,
            max_header_bytes=max_header_bytes,
            health_interval_s=health_interval, health_path=health_path, read_timeout_s=read_timeout,
            stall_timeout_s=stall_timeout,
            affinity_slack_tokens=affinity_slack, max_upstream_connections=max_upstream_connections,
            header_timeout_s=header_timeout, body_timeout_s=body_timeout, max_connections=max_connections,
            graceful_shutdown_s=graceful_shutdown_timeout, redis_url=redis, redis_lease_s=redis_lease,
            preempt=None if preempt is None else PreemptSettings.parse(preempt),
            query_window=query_window, cheap_predictor=cheap_predictor,
        )
        gateway = Gateway(config)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    if host not in ("127.0.0.1", "localhost", "::1") and not config.api_keys:
        logging.getLogger("lengthwise.gateway").warning("listening on %s without --api-key", host)
    window = f", query window {query_window} ordered by {gateway.cheap_predictor.name}" \
        if gateway.cheap_predictor is not None else ""
    typer.echo(f"lengthwise gateway on http://{host}:{port}/v1 → {', '.join(map(redacted, config.backends))} "
               f"(mode {mode}, policy {policy}, predictor {gateway.predictor.name}{window})", err=True)
    app, limits = guard(gateway.app, config)
    # What start-up built (modules, models, the predictor's vocabulary) lives as long as the process:
    # out of the collector's sight, a full collection no longer stalls requests (0.15 s here).
    gc.freeze()
    # uvicorn's lines (the access log's too) at the same level and in the same format as the gateway's.
    run(app, host, port, access_log=access_log, log_level=log_level.lower(), log_config=None, **limits)
