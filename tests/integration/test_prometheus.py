"""A real Prometheus scrapes `lengthwise serve` in front of the stub backend, and every query of the
committed Grafana dashboard (docs/grafana/lengthwise.json), with its template variables filled in from
Prometheus as Grafana would, returns finite values.

Needs the `prometheus` binary (`make prometheus` installs Debian's package; `make test` does that
first); no engine. Processes on loopback only, every wait bounded."""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lengthwise.bench.services import free_port, running_server

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana" / "lengthwise.json"
PROMETHEUS = shutil.which("prometheus")
#: What Grafana's `$__rate_interval` becomes here: a window over every scrape since the test started.
RATE_WINDOW = "5m"
STEP_TIMEOUT_S = 60.0
MODEL = "stub-model"
#: A shared prefix longer than the stub's cache block (512 characters), so repeated prompts hit its prefix cache.
PREFIX = "You are a careful assistant; answer briefly and precisely. " * 12


def _scrape_config(target: str) -> str:
    return (f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: lengthwise\n    static_configs:\n      - targets: ['{target}']\n")


@pytest.fixture
def scraped_gateway(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The stub backend, `lengthwise serve` in front of it (queue mode, 2 seats, `auto` choosing between
    prompt length and a constant), and Prometheus scraping the gateway every second: yields the
    gateway's URL and Prometheus's."""
    if PROMETHEUS is None:
        pytest.skip("the prometheus binary is not installed: `make prometheus` installs Debian's package "
                    "(needs root and apt-get)")
    stub_port, gateway_port, prom_port = free_port(), free_port(), free_port()
    stub = [sys.executable, "-m", "lengthwise.testing.stub_backend", "--port", str(stub_port),
            "--latency-ms", "20", "--token-interval-ms", "5"]
    gateway = [sys.executable, "-c", "from lengthwise.cli import app; app()", "serve", "--host", "127.0.0.1",
               "--port", str(gateway_port), "--backend", f"http://127.0.0.1:{stub_port}", "--mode", "queue",
               "--max-inflight", "2", "--no-lazy-prediction",
               "--predictor", "auto:candidates=prompt-length|constant:tokens=16,min_requests=3,sample=1"]
    config = tmp_path / "prometheus.yml"
    config.write_text(_scrape_config(f"127.0.0.1:{gateway_port}"))
    prometheus = [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                  f"--web.listen-address=127.0.0.1:{prom_port}"]
    logs = tmp_path / "logs"
    with running_server(stub, f"http://127.0.0.1:{stub_port}", logs / "stub.log", start_timeout_s=STEP_TIMEOUT_S), \
            running_server(gateway, f"http://127.0.0.1:{gateway_port}", logs / "gateway.log",
                           start_timeout_s=STEP_TIMEOUT_S) as gateway_url, \
            running_server(prometheus, f"http://127.0.0.1:{prom_port}", logs / "prometheus.log",
                           start_timeout_s=STEP_TIMEOUT_S, ready_path="/-/ready") as prom_url:
        yield gateway_url, prom_url


def _query(prom_url: str, expr: str) -> list[dict]:
    """An instant query's result vector (raises on a query Prometheus rejects)."""
    answer = httpx.get(prom_url + "/api/v1/query", params={"query": expr}, timeout=10.0).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def _wait_for(prom_url: str, expr: str, want: float) -> None:
    """Until the instant query `expr` reads `want`: Prometheus has scraped what was sent."""
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while True:
        result = _query(prom_url, expr)
        if result and float(result[0]["value"][1]) == want:
            return
        assert time.monotonic() < deadline, f"{expr} is {result}, not {want}, after {STEP_TIMEOUT_S:.0f} s"
        time.sleep(0.5)


async def _send_wave(url: str, wave: int, n: int = 24) -> int:
    """`n` chat requests, 8 at a time, half of them streamed, prompt and answer lengths growing together
    (so that the prompt-length predictor ranks them: its tau is defined), and one for an unknown model
    (404). Returns how many answers came back."""
    async def one(i: int, client: httpx.AsyncClient) -> int:
        body = {"model": MODEL, "max_tokens": 1 + i, "stream": i % 2 == 0,
                "messages": [{"role": "user", "content": PREFIX + f"wave {wave} question {i} " + "why? " * (4 * i)}]}
        if body["stream"]:
            body["stream_options"] = {"include_usage": True}
        response = await client.post(url + "/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        return 1

    seats = asyncio.Semaphore(8)

    async def seated(i: int, client: httpx.AsyncClient) -> int:
        async with seats:
            return await one(i, client)

    async with httpx.AsyncClient(timeout=STEP_TIMEOUT_S) as client:
        answered = sum(await asyncio.gather(*(seated(i, client) for i in range(n))))
        unknown = await client.post(url + "/v1/chat/completions", json={"model": "no-such-model", "messages": []})
        assert unknown.status_code in (400, 404), unknown.text
    return answered + 1


def _label_values(prom_url: str, definition: str) -> list[str]:
    """Grafana's `label_values(selector, label)` through Prometheus's HTTP API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition)
    assert match, f"not a label_values() query: {definition}"
    answer = httpx.get(f"{prom_url}/api/v1/label/{match[2]}/values", params={"match[]": match[1]}, timeout=10.0)
    return answer.json()["data"]


def _substituted(expr: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    return expr


def _regex(values: list[str]) -> str:
    """A multi-value variable as Grafana writes it into a PromQL regex: escaped, joined with |."""
    return "|".join(re.escape(v).replace("\\", "\\\\") for v in values)


async def test_every_dashboard_query_returns_data(scraped_gateway: tuple[str, str]) -> None:
    gateway_url, prom_url = scraped_gateway
    dashboard = json.loads(DASHBOARD.read_text())
    # Counters with labels appear with the first request; their rates need a scrape before and after a
    # change, so the requests come in two waves with a scrape between them.
    _wait_for(prom_url, 'up{job="lengthwise"}', 1)
    sent = await _send_wave(gateway_url, 1)
    _wait_for(prom_url, "sum(lengthwise_requests_total)", sent)
    sent += await _send_wave(gateway_url, 2)
    _wait_for(prom_url, "sum(lengthwise_requests_total)", sent)

    values = {"__rate_interval": RATE_WINDOW}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = _label_values(prom_url, _substituted(variable["definition"], values))
            assert found, f"the template variable ${variable['name']} has no values"
            values[variable["name"]] = _regex(found)
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(queries) >= 10
    empty = []
    for title, expr in queries:
        query = _substituted(expr, values)
        result = _query(prom_url, query)
        numbers = [float(series["value"][1]) for series in result]
        if not numbers or not all(math.isfinite(x) for x in numbers):
            empty.append(f"{title}: {query} -> {result}")
    assert not empty, "\n".join(empty)
