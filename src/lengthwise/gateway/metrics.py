"""Prometheus metrics of the gateway (served at /metrics).

Counters and histograms are updated per request; the per-backend gauges (queue depth,
in-flight requests, outstanding predicted work, health) are read from the live state at
scrape time, so the request path never maintains them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lengthwise.core.usage import cached_tokens
from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.scheduler import Scheduler

#: Queue-wait buckets for the cached-token share (the prefix may be evicted while waiting).
WAIT_EDGES = (0.1, 1.0, 10.0, 60.0)
_WAIT_LABELS = ("<0.1s", "0.1-1s", "1-10s", "10-60s", ">60s")
_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, math.inf)
_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)


def wait_bucket(seconds: float) -> str:
    for edge, label in zip(WAIT_EDGES, _WAIT_LABELS):
        if seconds < edge:
            return label
    return _WAIT_LABELS[-1]


class _StateCollector(Collector):
    def __init__(self, pool: BackendPool, scheduler: Scheduler | None) -> None:
        self.pool = pool
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "queue_depth": GaugeMetricFamily(
                "lengthwise_queue_depth", "Requests waiting in the gateway for the backend.", labels=["backend"]),
            "inflight": GaugeMetricFamily(
                "lengthwise_backend_inflight_requests", "Requests sent to the backend and not finished.",
                labels=["backend"]),
            "work": GaugeMetricFamily(
                "lengthwise_backend_outstanding_tokens",
                "Predicted output tokens of the requests routed to the backend (waiting or in flight).",
                labels=["backend"]),
            "healthy": GaugeMetricFamily(
                "lengthwise_backend_healthy", "1 while the backend is in the pool.", labels=["backend"]),
        }
        for b in self.pool.backends:
            gauges["queue_depth"].add_metric([b.url], self.scheduler.waiting(b) if self.scheduler else 0)
            gauges["inflight"].add_metric([b.url], b.inflight)
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
            tau.add_metric([name], math.nan if quality["tau"] is None else quality["tau"])
            low.add_metric([name], math.nan if quality["ci_low"] is None else quality["ci_low"])
        yield from (chosen, tau, low, window)


class _CpuCollector(Collector):
    """The gateway process's CPU time, read at scrape time, and its average per answered request."""

    def __init__(self, requests: Counter) -> None:
        self.requests = requests

    def collect(self) -> Iterator[Metric]:
        cpu = time.process_time()
        yield CounterMetricFamily("lengthwise_gateway_cpu_seconds", "CPU seconds (user + system, all threads) "
                                  "the gateway process has used.", value=cpu)
        answered = sum(s.value for m in self.requests.collect() for s in m.samples if s.name.endswith("_total"))
        yield GaugeMetricFamily("lengthwise_gateway_cpu_seconds_per_request", "The gateway's CPU seconds per "
                                "answered request since it started.", value=cpu / answered if answered else math.nan)


class GatewayMetrics:
    def __init__(self, pool: BackendPool, scheduler: Scheduler | None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("lengthwise_requests", "Requests answered, by endpoint and HTTP status "
                                "(499: the client went away).", ["endpoint", "status"], registry=r)
        self.queue_wait = Histogram("lengthwise_queue_wait_seconds", "Time requests waited in the gateway queue.",
                                    buckets=_SECONDS_BUCKETS, registry=r)
        self.predictions = Counter("lengthwise_predictions", "Predictions by predictor and outcome "
                                   "(ok, fallback: the predictor's own, timeout: the gateway gave up waiting, "
                                   "deferred: nothing waited, predicted in the background to learn, skipped: "
                                   "nothing waited and too many background predictions ran).",
                                   ["predictor", "outcome"], registry=r)
        self.prediction_seconds = Histogram("lengthwise_prediction_seconds", "Time spent predicting a request.",
                                            buckets=_SECONDS_BUCKETS, registry=r)
        self.predicted_tokens = Histogram("lengthwise_predicted_tokens", "Predicted output tokens.",
                                          buckets=_TOKEN_BUCKETS, registry=r)
        self.completion_tokens = Histogram("lengthwise_completion_tokens", "Actual output tokens (usage).",
                                           buckets=_TOKEN_BUCKETS, registry=r)
        self.abs_error = Histogram("lengthwise_prediction_abs_error_tokens",
                                   "|predicted - actual| output tokens of completed requests.",
                                   buckets=_TOKEN_BUCKETS, registry=r)
        self.log2_ratio = Histogram("lengthwise_prediction_log2_ratio",
                                    "log2(predicted / actual) output tokens: 0 is exact, +1 twice too long.",
                                    buckets=(-4, -3, -2, -1, -0.5, 0, 0.5, 1, 2, 3, 4, math.inf), registry=r)
        self.prompt_tokens = Counter("lengthwise_prompt_tokens", "Prompt tokens of completed requests, "
                                     "by their queue wait.", ["wait"], registry=r)
        self.cached_tokens = Counter("lengthwise_cached_prompt_tokens", "Prompt tokens the engine served "
                                     "from its prefix cache, by queue wait.", ["wait"], registry=r)
        self.upstream_errors = Counter("lengthwise_upstream_errors", "Failed exchanges with a backend, by kind "
                                       "(connect, disconnect, timeout, invalid, cut).", ["backend", "kind"],
                                       registry=r)
        self.retries = Counter("lengthwise_upstream_retries", "Requests sent again to another backend.",
                               registry=r)
        self.usage_missing = Counter("lengthwise_usage_missing", "Completed responses without usage "
                                     "(nothing to learn from).", registry=r)
        r.register(_StateCollector(pool, scheduler))
        r.register(_CpuCollector(self.requests))

    def watch_predictor(self, status: Callable[[], dict[str, Any] | None]) -> None:
        """Export a predictor's `status()` at scrape time, if it is a choice (lengthwise.predict.auto.selector)."""
        self.registry.register(_PredictorCollector(status))

    def completed(self, predicted: float, usage: dict[str, object], queue_wait_s: float, n: int = 1) -> int | None:
        """Record a completed response's usage; returns its output tokens per choice (None if unusable)."""
        total = usage.get("completion_tokens")
        if not isinstance(total, int) or isinstance(total, bool):
            self.usage_missing.inc()
            return None
        actual = round(total / n)
        self.completion_tokens.observe(actual)
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
