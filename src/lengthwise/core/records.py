"""Per-request records and the latency, throughput, goodput and fairness metrics over them.

Shared by the live benchmark and the simulator, so both report the same numbers.
Names and definitions follow `vllm bench serve` where it has them:

- TTFT = first token time − arrival; E2EL = finish − arrival.
- TPOT = (E2EL − TTFT) / (output_tokens − 1), over requests with more than one
  output token; ITL = every gap between consecutive streamed tokens, pooled.
- Durations are reported in milliseconds as ``mean_<m>_ms``, ``median_<m>_ms``,
  ``std_<m>_ms`` and ``p<q>_<m>_ms``.
- request/output/total-token throughput divide by the run's duration.
- goodput (``--goodput ttft:MS tpot:MS e2el:MS``): a request is good when it meets
  every given SLO (``value <= slo``; a request with one output token has TPOT 0).

Added for scheduling, with no vLLM equivalent:

- slowdown = E2EL / the request's own service time. Records carry it as `ideal_s`
  (the simulator knows its latency alone on an idle engine); where they don't (a
  real engine), it is a prefill estimate plus the request's own decode time
  (finish − first token, the sum of its ITLs). The prefill estimate is `prefill_s`,
  else the run's shortest TTFT (a prefill that waited for nothing). Measuring the
  decode rather than deriving it from a best-case speed keeps a slow spell of the
  engine out of the slowdown: what is left is how long the request waited relative
  to how long it was served (HRRN's response ratio).
- normalized latency = E2EL / output tokens (s per token, as in the vLLM paper).
- wait = scheduled_time − arrival where the engine's admission time is known
  (simulator), else TTFT (the client's view); ``max_wait_ms`` is its maximum.
- ``p99_e2el_longest10_ms``: p99 E2EL among the 10% of requests with the most
  output tokens, the ones a length-aware policy is tempted to starve;
  ``p99_e2el_longest10_prompt_ms`` the same for the 10% with the longest prompts,
  the ones a policy keyed on prompt or prefill work is tempted to starve.
- ``jain_fairness`` = (Σx)² / (n·Σx²) over per-request slowdowns: 1 when every
  request is slowed down equally, 1/n when one request takes all the delay.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from lengthwise.core.io import write_jsonl

GOODPUT_METRICS = ("ttft", "tpot", "e2el")
DEFAULT_PERCENTILES: tuple[float, ...] = (50, 90, 99)
#: Output-length bucket edges (tokens); a bucket is [edge_i, edge_i+1).
DEFAULT_BUCKETS: tuple[float, ...] = (0, 64, 128, 256, 512, 1024, math.inf)


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request. Times are seconds on one clock (any origin)."""

    id: str
    arrival: float
    first_token_time: float | None = None
    finish_time: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    predicted_tokens: float | None = None
    #: Which predictor the gateway scheduled it by (`x-lengthwise-predictor`; `auto:none`: by arrival).
    predictor: str | None = None
    #: Gaps between consecutive output tokens after the first (s), as vLLM's `itl`.
    itl: list[float] | None = None
    #: Prompt tokens served from the prefix cache.
    cached_tokens: int | None = None
    #: Why the request failed; failed requests count in `failed` and nowhere else.
    error: str | None = None
    #: When the engine admitted it (known in the simulator; absent on a real engine).
    scheduled_time: float | None = None
    #: Its E2E latency alone on an idle engine, for slowdown.
    ideal_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_time is not None and self.first_token_time is not None

    @property
    def ttft(self) -> float:
        return _required(self.first_token_time, self) - self.arrival

    @property
    def e2el(self) -> float:
        return _required(self.finish_time, self) - self.arrival

    @property
    def tpot(self) -> float:
        """Mean time per output token after the first; 0 for a single-token answer (vLLM's rule)."""
        return (self.e2el - self.ttft) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0

    @property
    def wait(self) -> float:
        return (self.scheduled_time - self.arrival) if self.scheduled_time is not None else self.ttft

    @staticmethod
    def itl_from_token_times(token_times: Sequence[float]) -> list[float]:
        """ITLs from the absolute arrival times of the streamed tokens."""
        return [b - a for a, b in zip(token_times, token_times[1:], strict=False)]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RequestRecord:
        """Build from a dict, ignoring unknown keys (records written by newer code still load)."""
        known = {f.name for f in fields(cls)}
        missing = {"id", "arrival"} - data.keys()
        if missing:
            raise ValueError(f"request record lacks {sorted(missing)}: {dict(data)!r:.200}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _required(value: float | None, rec: RequestRecord) -> float:
    if value is None:
        raise ValueError(f"request {rec.id!r} did not complete (error: {rec.error})")
    return value


def save_records(records: Iterable[RequestRecord], path: Path) -> None:
    """Write records as JSON lines (one record per line), atomically."""
    write_jsonl(path, (rec.to_dict() for rec in records))


def load_records(path: Path) -> list[RequestRecord]:
    """Read records from JSON lines, a JSON list, or a JSON object with a "records" list."""
    text = Path(path).read_text()
    if text.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # JSON lines
        if isinstance(data, list):
            return [RequestRecord.from_dict(d) for d in data]
        if isinstance(data, dict) and isinstance(data.get("records"), list):
            return [RequestRecord.from_dict(d) for d in data["records"]]
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(RequestRecord.from_dict(json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not a JSON record ({e})") from None
    return out


def parse_goodput(specs: Sequence[str] | str) -> dict[str, float]:
    """Parse SLOs like ``["ttft:500", "tpot:50"]`` (milliseconds) into seconds per metric.

    Accepts the `vllm bench serve --goodput` syntax; also one space-separated string.
    """
    if isinstance(specs, str):
        specs = specs.split()
    slos: dict[str, float] = {}
    for spec in specs:
        name, sep, value = spec.partition(":")
        name = name.strip().lower()
        if not sep or name not in GOODPUT_METRICS:
            raise ValueError(f"bad goodput SLO {spec!r}: expected NAME:MS with NAME in {', '.join(GOODPUT_METRICS)}")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"bad goodput SLO {spec!r}: {value!r} is not a number of milliseconds") from None
        if ms < 0 or not math.isfinite(ms):
            raise ValueError(f"bad goodput SLO {spec!r}: milliseconds must be finite and >= 0")
        slos[name] = ms / 1000.0
    return slos


def percentile_stats(name: str, values_s: np.ndarray, percentiles: Sequence[float]) -> dict[str, float]:
    """``mean_/median_/std_/p<q>_<name>_ms`` of durations in seconds (0 when empty, as vLLM)."""
    v = np.asarray(values_s, dtype=float) * 1000.0
    empty = v.size == 0
    out = {
        f"mean_{name}_ms": 0.0 if empty else float(v.mean()),
        f"median_{name}_ms": 0.0 if empty else float(np.median(v)),
        f"std_{name}_ms": 0.0 if empty else float(v.std()),
    }
    for q in percentiles:
        out[f"p{_pct_label(q)}_{name}_ms"] = 0.0 if empty else float(np.percentile(v, q))
    return out


def _pct_label(q: float) -> str:
    return str(int(q)) if float(q).is_integer() else str(q)


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness index of non-negative allocations; 1.0 for an empty or all-zero input."""
    x = np.asarray(x, dtype=float)
    sq = float(np.sum(x * x))
    return 1.0 if x.size == 0 or sq == 0 else float(np.sum(x) ** 2 / (x.size * sq))


@dataclass(frozen=True)
class _Columns:
    """The completed requests' fields as arrays, so 100,000 records summarize quickly."""

    prompt: np.ndarray
    output: np.ndarray
    arrival: np.ndarray
    ttft: np.ndarray
    e2el: np.ndarray
    tpot: np.ndarray
    wait: np.ndarray
    ideal: np.ndarray  # NaN where the record has none
    itl: np.ndarray
    cached: np.ndarray

    @classmethod
    def of(cls, done: Sequence[RequestRecord]) -> _Columns:
        def arr(values: Iterable[float | None]) -> np.ndarray:
            return np.fromiter((np.nan if v is None else v for v in values), dtype=float, count=len(done))

        output = arr(r.output_tokens for r in done)
        arrival = arr(r.arrival for r in done)
        ttft = arr(r.first_token_time for r in done) - arrival
        e2el = arr(r.finish_time for r in done) - arrival
        sched = arr(r.scheduled_time for r in done) - arrival
        with np.errstate(divide="ignore", invalid="ignore"):
            tpot = np.where(output > 1, (e2el - ttft) / (output - 1), 0.0)
        itls = [x for r in done if r.itl for x in r.itl]
        return cls(
            prompt=arr(r.prompt_tokens for r in done), output=output, arrival=arrival, ttft=ttft, e2el=e2el,
            tpot=tpot, wait=np.where(np.isnan(sched), ttft, sched), ideal=arr(r.ideal_s for r in done),
            itl=np.asarray(itls, dtype=float), cached=arr(r.cached_tokens for r in done),
        )  # fmt: skip


@dataclass(frozen=True)
class _RunContext:
    """What every bucket of a run shares: duration, SLOs and the prefill estimate behind slowdowns."""

    duration_s: float
    slos: Mapping[str, float] | None
    prefill_s: float
    percentiles: Sequence[float]

    @classmethod
    def of(
        cls,
        records: Sequence[RequestRecord],
        done: Sequence[RequestRecord],
        duration_s: float | None,
        goodput: Mapping[str, float] | Sequence[str] | None,
        prefill_s: float | None,
        percentiles: Sequence[float],
    ) -> _RunContext:
        if duration_s is None:
            duration_s = (max(r.finish_time for r in done) - min(r.arrival for r in records)) if done else 0.0
        slos = parse_goodput(goodput) if goodput is not None and not isinstance(goodput, Mapping) else goodput
        if prefill_s is None:
            prefill_s = min(r.ttft for r in done) if done else 0.0
        return cls(duration_s, slos, prefill_s, tuple(percentiles))


def summarize(
    records: Sequence[RequestRecord],
    *,
    duration_s: float | None = None,
    goodput: Mapping[str, float] | Sequence[str] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    prefill_s: float | None = None,
) -> dict[str, float]:
    """All metrics of one run as a flat dict with `vllm bench serve` key names where they exist.

    `duration_s` defaults to last finish − first arrival. `goodput` takes seconds per
    metric (from `parse_goodput`) or the raw ``NAME:MS`` strings.
    """
    done = [r for r in records if r.ok]
    ctx = _RunContext.of(records, done, duration_s, goodput, prefill_s, percentiles)
    return _summarize_columns(_Columns.of(done), len(records) - len(done), ctx)


def summarize_by_bucket(
    records: Sequence[RequestRecord],
    *,
    edges: Sequence[float] = DEFAULT_BUCKETS,
    duration_s: float | None = None,
    goodput: Mapping[str, float] | Sequence[str] | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    prefill_s: float | None = None,
) -> dict[str, dict[str, float]]:
    """`summarize` per bucket of actual output tokens (``"64-127"``, ..., ``"1024+"``).

    Throughputs use the whole run's duration (bucket throughputs add up to the run's),
    and so does the prefill estimate behind slowdowns. Empty buckets are left out.
    """
    done = [r for r in records if r.ok]
    ctx = _RunContext.of(records, done, duration_s, goodput, prefill_s, percentiles)
    out: dict[str, dict[str, float]] = {}
    for lo, hi in zip(edges, edges[1:], strict=False):
        bucket = [r for r in done if lo <= r.output_tokens < hi]
        if bucket:
            out[bucket_label(lo, hi)] = _summarize_columns(_Columns.of(bucket), 0, ctx)
    return out


def bucket_label(lo: float, hi: float) -> str:
    return f"{int(lo)}+" if math.isinf(hi) else f"{int(lo)}-{int(hi) - 1}"


def _summarize_columns(c: _Columns, failed: int, ctx: _RunContext) -> dict[str, float]:
    n = int(c.output.size)
    duration_s, percentiles = ctx.duration_s, ctx.percentiles
    rate = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    total_in, total_out = float(c.prompt.sum()), float(c.output.sum())
    out: dict[str, float] = {
        "completed": n,
        "failed": failed,
        "duration_s": float(duration_s),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": rate(n),
        "output_throughput": rate(total_out),
        "total_token_throughput": rate(total_in + total_out),
    }
    if ctx.slos:
        good = np.ones(n, dtype=bool)
        for name, limit in ctx.slos.items():
            good &= {"ttft": c.ttft, "tpot": c.tpot, "e2el": c.e2el}[name] <= limit
        out["request_goodput"] = rate(int(good.sum()))
        out["goodput_fraction"] = float(good.mean()) if n else 0.0
    for name, values in (("ttft", c.ttft), ("tpot", c.tpot[c.output > 1]), ("itl", c.itl), ("e2el", c.e2el)):
        out.update(percentile_stats(name, values, percentiles))
    service = np.where(np.isnan(c.ideal), ctx.prefill_s + (c.e2el - c.ttft), c.ideal)
    with np.errstate(divide="ignore", invalid="ignore"):
        slowdown = np.where(service > 0, c.e2el / service, 1.0)
    out["mean_slowdown"] = float(slowdown.mean()) if n else 0.0
    for q in percentiles:
        out[f"p{_pct_label(q)}_slowdown"] = float(np.percentile(slowdown, q)) if n else 0.0
    out["mean_normalized_latency_ms"] = float((c.e2el / np.maximum(c.output, 1)).mean() * 1000) if n else 0.0
    out["mean_wait_ms"] = float(c.wait.mean() * 1000) if n else 0.0
    out["max_wait_ms"] = float(c.wait.max() * 1000) if n else 0.0
    out["p99_e2el_longest10_ms"] = _p99_of_longest(c.e2el, c.output) * 1000
    out["p99_e2el_longest10_prompt_ms"] = _p99_of_longest(c.e2el, c.prompt) * 1000
    out["jain_fairness"] = jain_index(slowdown)
    known = ~np.isnan(c.cached)
    prompt_known = float(c.prompt[known].sum())
    out["prefix_cache_hit_rate"] = float(c.cached[known].sum() / prompt_known) if prompt_known > 0 else 0.0
    return out


def _p99_of_longest(e2el: np.ndarray, length: np.ndarray) -> float:
    """p99 of `e2el` over the 10% of requests with the largest `length` (0 for none)."""
    n = length.size
    if n == 0:
        return 0.0
    k = max(1, math.ceil(n * 0.1))
    longest = np.argsort(length, kind="stable")[-k:]
    return float(np.percentile(e2el[longest], 99))
