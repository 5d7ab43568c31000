"""Prometheus metrics of the gateway (served at /metrics).

Where vLLM exports a metric of the same meaning, the gateway exports it under vLLM's name
with the prefix `lengthwise:` (`vllm:e2e_request_latency_seconds` → `lengthwise:e2e_request_latency_seconds`),
with vLLM's buckets, so that one dashboard shows the client's view (the gateway) beside
the engine's; metrics of the gateway's own (predictions, routing) are `lengthwise_*`.

Counters and histograms are updated per request; the per-backend gauges (requests waiting
and running, outstanding predicted work, health) are read from the live state at scrape
time, so the request path never maintains them. A series is exported only once it has a
value: no `_created` series, no NaN gauges.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lengthwise.core.usage import cached_tokens
from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.flight import Flight

#: Queue-wait buckets for the cached-token share (the prefix may be evicted while waiting).
WAIT_EDGES = (0.1, 1.0, 10.0, 60.0)
_WAIT_LABELS = ("<0.1s", "0.1-1s", "1-10s", "10-60s", ">60s")
_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, math.inf)
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)
# vLLM's default buckets (vllm/v1/metrics/buckets.py, vLLM 0.32), so that the gateway's and the engine's
# histograms of the same name compare bucket for bucket.
#: E2E latency.
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
                           240.0, 480.0, 960.0, 1920.0, 7680.0, math.inf)
#: TTFT, and the queue time too: vLLM's own queue time has the E2E edges, but the gateway's is often a few
#: milliseconds, under their first edge (0.3 s).
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                               10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0, math.inf)
#: Time per output token.
INTER_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                               10.0, 20.0, 40.0, 80.0, math.inf)
#: Tokens per request: vLLM's 1-2-5 series (up to its max_model_len; here to a 128K context).
REQUEST_TOKENS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, math.inf)


def wait_bucket(seconds: float) -> str:
    for edge, label in zip(WAIT_EDGES, _WAIT_LABELS):
        if seconds < edge:
            return label
    return _WAIT_LABELS[-1]


class _StateCollector(Collector):
    def __init__(self, pool: BackendPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "waiting": GaugeMetricFamily(
                "lengthwise:num_requests_waiting", "Requests routed to the backend and not sent to it yet "
                "(being predicted, or in the gateway's queue).", labels=["backend"]),
            "running": GaugeMetricFamily(
                "lengthwise:num_requests_running", "Requests sent to the backend whose response has not ended "
                "(the engine may still queue them: its vllm:num_requests_waiting).", labels=["backend"]),
            "work": GaugeMetricFamily(
                "lengthwise_backend_outstanding_tokens",
                "Predicted output tokens of the requests routed to the backend (waiting or in flight).",
                labels=["backend"]),
            "healthy": GaugeMetricFamily(
                "lengthwise_backend_healthy", "1 while the backend is in the pool.", labels=["backend"]),
        }
        for b in self.pool.backends:
            gauges["waiting"].add_metric([b.url], b.waiting)
            gauges["running"].add_metric([b.url], b.inflight)
            gauges["work"].add_metric([b.url], b.outstanding_tokens)
            gauges["healthy"].add_metric([b.url], 1.0 if b.healthy else 0.0)
        yield from gauges.values()


class _PredictorCollector(Collector):
    """The automatic predictor choice and each candidate's measured ranking quality."""

    def __init__(self, status: Callable[[], dict[str, Any] | None]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        if status is None or "choice" not in status:  # a predictor that does not choose
            return
        chosen = GaugeMetricFamily("lengthwise_predictor_chosen", "1 for the predictor that schedules "
                                   "(none: FCFS), 0 for the other candidates.", labels=["predictor"])
        tau = GaugeMetricFamily("lengthwise_predictor_tau", "Kendall tau-b of predicted against actual "
                                "output tokens over the candidate's window.", labels=["predictor"])
        low = GaugeMetricFamily("lengthwise_predictor_tau_ci_low", "Lower confidence bound of the tau.",
                                labels=["predictor"])
        window = GaugeMetricFamily("lengthwise_predictor_window_requests", "Completed requests in the "
                                   "candidate's quality window.", labels=["predictor"])
        candidates = status.get("candidates", {})
        for name in [*candidates, "none"]:
            chosen.add_metric([name], 1.0 if status.get("choice") == name else 0.0)
        for name, quality in candidates.items():
            window.add_metric([name], quality["n"])
            if quality["tau"] is not None:  # undefined while the outputs have no variance: no sample
                tau.add_metric([name], quality["tau"])
            if quality["ci_low"] is not None:
                low.add_metric([name], quality["ci_low"])
        yield from (chosen, tau, low, window)


class _SharedCollector(Collector):
    """What the replica shares through Redis: whether it can now, its fallbacks, the evidence exchanged."""

    def __init__(self, status: Callable[[], dict[str, Any] | None]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        if status is None:
            return
        connected = GaugeMetricFamily("lengthwise_redis_connected", "1 while this part (queue, learning) works "
                                      "through Redis, 0 while it is local only (Redis unreachable).", labels=["part"])
        queue, learning = status["queue"], status["learning"]
        for part, state in (("queue", queue), ("learning", learning)):
            if state is not None:
                connected.add_metric([part], float(state["connected"]))
        yield connected
        if queue is not None:
            yield CounterMetricFamily("lengthwise_redis_fallbacks", "Times Redis became unreachable and the "
                                      "replica fell back to its local queue.", value=queue["fallbacks"])
        evidence = CounterMetricFamily("lengthwise_shared_evidence", "Completions' learning evidence sent to the "
                                       "other replicas, and taken in from them.", labels=["direction"])
        evidence.add_metric(["published"], learning["published"])
        evidence.add_metric(["absorbed"], learning["absorbed"])
        yield evidence


class _CpuCollector(Collector):
    """The gateway process's CPU time, read at scrape time, and its average per answered request."""

    def __init__(self, requests: Counter) -> None:
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        cpu = time.process_time()
        yield CounterMetricFamily("lengthwise_gateway_cpu_seconds", "CPU seconds (user + system, all threads) "
                                  "the gateway process has used.", value=cpu)
        answered = sum(s.value for m in self.requests.collect() for s in m.samples if s.name.endswith("_total"))
        if answered:  # undefined before the first answer: no series
            yield GaugeMetricFamily("lengthwise_gateway_cpu_seconds_per_request", "The gateway's CPU seconds per "
                                    "answered request since it started.", value=cpu / answered)


class GatewayMetrics:
    def __init__(self, pool: BackendPool) -> None:
        # A `_created` twin of every counter and histogram only clutters a dashboard's metric list (this
        # switch is process-wide; the gateway's process exports nothing else).
        disable_created_metrics()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lengthwise_requests", "Requests answered, by endpoint and HTTP status "
                                "(499: the client went away).", ["endpoint", "status"], registry=r)
        # As the client sees them, from the moment the gateway accepted the request:
        self.e2e_latency = Histogram("lengthwise:e2e_request_latency_seconds", "Time from the request's arrival "
                                     "at the gateway to the end of its successful response.",
                                     buckets=REQUEST_LATENCY_BUCKETS, registry=r)
        self.time_to_first_token = Histogram("lengthwise:time_to_first_token_seconds", "Time from the request's "
                                             "arrival at the gateway to the first bytes of its streamed answer.",
                                             buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=r)
        self.queue_time = Histogram("lengthwise:request_queue_time_seconds", "Time from the request's arrival at "
                                    "the gateway to its being sent upstream (prediction and the gateway's queue).",
                                    buckets=TIME_TO_FIRST_TOKEN_BUCKETS, registry=r)
        self.time_per_output_token = Histogram("lengthwise:request_time_per_output_token_seconds", "Time from a "
                                               "streamed answer's first bytes to its end, per output token after "
                                               "the first.", buckets=INTER_TOKEN_LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("lengthwise_predictions", "Predictions by predictor and outcome "
                                   "(ok, fallback: the predictor's own, timeout: the gateway gave up waiting, "
                                   "deferred: nothing waited, predicted in the background to learn, skipped: "
                                   "nothing waited and too many background predictions ran).",
                                   ["predictor", "outcome"], registry=r)
        self.prediction_seconds = Histogram("lengthwise_prediction_seconds", "Time spent predicting a request.",
                                            buckets=_SECONDS_BUCKETS, registry=r)
        self.predicted_tokens = Histogram("lengthwise_predicted_tokens", "Predicted output tokens.",
                                          buckets=_TOKEN_BUCKETS, registry=r)
        self.generation_tokens = Histogram("lengthwise:request_generation_tokens", "Output tokens per choice of "
                                           "completed requests (usage).", buckets=REQUEST_TOKENS_BUCKETS, registry=r)
        self.abs_error = Histogram("lengthwise_prediction_abs_error_tokens",
                                   "|predicted - actual| output tokens of completed requests.",
                                   buckets=_TOKEN_BUCKETS, registry=r)
        self.log2_ratio = Histogram("lengthwise_prediction_log2_ratio",
                                    "log2(predicted / actual) output tokens: 0 is exact, +1 twice too long.",
                                    buckets=(-4, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, math.inf), registry=r)
        self.prompt_tokens = Counter("lengthwise:prompt_tokens", "Prompt tokens of completed requests, "
                                     "by their wait in the gateway's queue.", ["wait"], registry=r)
        self.cached_tokens = Counter("lengthwise:prompt_tokens_cached", "Prompt tokens the engine served "
                                     "from its prefix cache, by their wait in the gateway's queue.", ["wait"], registry=r)
        self.upstream_errors = Counter("lengthwise_upstream_errors", "Failed exchanges with a backend, by kind "
                                       "(connect, disconnect, timeout, invalid, cut).", ["backend", "kind"],
                                       registry=r)
        self.retries = Counter("lengthwise_upstream_retries", "Requests sent again to another backend.",
                               registry=r)
        self.usage_missing = Counter("lengthwise_usage_missing", "Completed responses without usage "
                                     "(nothing to learn from).", registry=r)
        self.preemptions = Counter("lengthwise_preemptions", "Requests preempted (their upstream run ended to "
                                   "let a shorter one in, resumed later as a continuation).", registry=r)
        self.not_preemptible = Counter("lengthwise_not_preemptible", "Requests never preempted because they "
                                       "cannot be resumed exactly, by reason (docs/GATEWAY.md).", ["reason"],
                                       registry=r)
        self.resume_seconds = Histogram("lengthwise_resume_seconds", "Time from sending a continuation to its "
                                        "first token (the resume's prefill).", buckets=_SECONDS_BUCKETS, registry=r)
        self.resume_prompt_tokens = Counter("lengthwise_resume_prompt_tokens", "Prompt tokens of continuations "
                                            "(the original prompt plus the answer so far).", registry=r)
        self.resume_cached_tokens = Counter("lengthwise_resume_cached_tokens", "Prompt tokens of continuations the "
                                            "engine served from its prefix cache.", registry=r)
        r.register(_StateCollector(pool))
        r.register(_CpuCollector(self.requests))

    def watch_predictor(self, status: Callable[[], dict[str, Any] | None]) -> None:
        """Export a predictor's `status()` at scrape time, if it is a choice (lengthwise.predict.auto.selector)."""
        self.registry.register(_PredictorCollector(status))

    def answered(self, f: Flight, ended_at: float) -> None:
        """The latencies of an answered request as its client saw them, from its arrival at the gateway
        (monotonic seconds): queue time if it went upstream; E2E if it succeeded; TTFT and time per
        output token if its answer was streamed."""
        if f.sent_at is not None:
            self.queue_time.observe(f.sent_at - f.arrived_at)
        if f.status != 200:
            return
        self.e2e_latency.observe(ended_at - f.arrived_at)
        if f.first_bytes_at is not None:
            self.time_to_first_token.observe(f.first_bytes_at - f.arrived_at)
            if f.output_tokens is not None and f.output_tokens > 1:
                self.time_per_output_token.observe((ended_at - f.first_bytes_at) / (f.output_tokens - 1))

    def watch_shared(self, status: Callable[[], dict[str, Any] | None]) -> None:
        """Export what the replica shares through Redis (the gateway's `redis` status) at scrape time."""
        self.registry.register(_SharedCollector(status))

    def completed(self, predicted: float, usage: dict[str, object], queue_wait_s: float, n: int = 1) -> int | None:
        """Record a completed response's usage; returns its output tokens per choice (None if unusable)."""
        total = usage.get("completion_tokens")
        if not isinstance(total, int) or isinstance(total, bool):
            self.usage_missing.inc()
            return None
        actual = round(total / n)
        self.generation_tokens.observe(actual)
        self.abs_error.observe(abs(predicted - actual))
        if predicted > 0 and actual > 0:
            self.log2_ratio.observe(math.log2(predicted / actual))
        prompt = usage.get("prompt_tokens")
        if isinstance(prompt, int) and prompt > 0:
            bucket = wait_bucket(queue_wait_s)
            self.prompt_tokens.labels(bucket).inc(prompt)
            cached = cached_tokens(usage)
            if cached is not None and cached > 0:
                self.cached_tokens.labels(bucket).inc(cached)
        return actual
