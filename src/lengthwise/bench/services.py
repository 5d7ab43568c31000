"""Servers a comparison starts for itself: the gateway per arm (a subprocess), and a
health probe shared with the engine checks.

Every server started here is stopped here, even when the run fails, and its log
is kept so a failed start says why.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def is_healthy(url: str, timeout_s: float = 2.0, path: str = "/health") -> bool:
    """True when `GET {url}{path}` answers 200."""
    try:
        return httpx.get(f"{url.rstrip('/')}{path}", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def running_server(cmd: Sequence[str], url: str, log: Path, start_timeout_s: float = 120.0,
                   ready_path: str = "/health") -> Iterator[str]:
    """Run `cmd` until the `with` block ends; yields `url` once its `ready_path` answers 200.

    Raises RuntimeError with the log's tail if the process exits or stays
    unhealthy for `start_timeout_s`.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not is_healthy(url, timeout_s=1.0, path=ready_path):
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}; log {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy after {start_timeout_s:.0f} s; log {log}:\n{_tail(log)}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def lengthwise_command(*args: str) -> list[str]:
    """The `lengthwise` CLI of this very environment, with `args`."""
    script = Path(sys.executable).with_name("lengthwise")
    return [str(script) if script.exists() else "lengthwise", *args]


def gateway_command(backend: str, port: int, args: Sequence[str]) -> list[str]:
    """`lengthwise serve` in front of `backend` on 127.0.0.1:`port` with extra `args`."""
    return lengthwise_command("serve", "--backend", backend, "--host", "127.0.0.1", "--port", str(port), *args)


def _metric_samples(url: str) -> dict[str, float] | None:
    """Every sample of a server's Prometheus /metrics, summed over labels; None if it has none."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        resp = httpx.get(f"{url.rstrip('/')}/metrics", timeout=5.0)
        families = list(text_string_to_metric_families(resp.text)) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None
    if families is None:
        return None
    totals: dict[str, float] = {}
    for sample in (s for fam in families for s in fam.samples):
        totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def engine_busy(url: str) -> float | None:
    """Requests running or waiting in a vLLM engine (from /metrics); None if it has no such gauges."""
    samples = _metric_samples(url) or {}
    values = [samples[g] for g in ("vllm:num_requests_running", "vllm:num_requests_waiting") if g in samples]
    return sum(values) if values else None


#: vLLM's counters that measure the engine's own speed and prefill work over a run (summed over labels):
#: `prompt_tokens_cached` is the part of `prompt_tokens` its prefix cache served.
ENGINE_COUNTERS = (
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:prompt_tokens_cached_total",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
)
#: The gateway's counters of preemption and of the continuations' prompts (docs/GATEWAY.md, Preemption).
GATEWAY_COUNTERS = (
    "lengthwise_preemptions_total",
    "lengthwise_resume_prompt_tokens_total",
    "lengthwise_resume_cached_tokens_total",
)


def read_counters(url: str, names: Sequence[str]) -> dict[str, float]:
    """Those of `names` a server's /metrics exports now (none for a server without /metrics)."""
    samples = _metric_samples(url) or {}
    return {name: samples[name] for name in names if name in samples}


def engine_counters(url: str) -> dict[str, float]:
    """The engine's `ENGINE_COUNTERS` now."""
    return read_counters(url, ENGINE_COUNTERS)


def gateway_counters(url: str) -> dict[str, float]:
    """A lengthwise gateway's `GATEWAY_COUNTERS` now."""
    return read_counters(url, GATEWAY_COUNTERS)


def wait_idle(url: str, timeout_s: float = 300.0) -> bool:
    """Wait until the engine runs and queues nothing, so one arm's tail can't slow the next."""
    deadline = time.monotonic() + timeout_s
    while (busy := engine_busy(url)) and time.monotonic() < deadline:
        time.sleep(1.0)
    return not busy


@dataclass(frozen=True)
class GatewayCpu:
    """The gateway's process CPU seconds and answered requests, read from its /metrics at one moment."""

    cpu_s: float
    requests: float


def gateway_cpu(url: str) -> GatewayCpu | None:
    """The gateway's CPU reading (`lengthwise_gateway_cpu_seconds_total`, `lengthwise_requests_total`);
    None when `url` is not a lengthwise gateway or does not answer."""
    samples = _metric_samples(url) or {}
    if "lengthwise_gateway_cpu_seconds_total" not in samples:
        return None
    return GatewayCpu(samples["lengthwise_gateway_cpu_seconds_total"], samples.get("lengthwise_requests_total", 0.0))


def cpu_per_request(before: GatewayCpu | None, after: GatewayCpu | None) -> float | None:
    """The gateway's CPU seconds per request answered between two readings (None if unknown)."""
    if before is None or after is None or after.requests <= before.requests:
        return None
    return (after.cpu_s - before.cpu_s) / (after.requests - before.requests)
