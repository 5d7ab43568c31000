"""The gateway's /metrics as a dashboard reads it: latencies as clients see them under vLLM's names,
requests waiting and running per backend, and no empty or undefined series."""

import asyncio
import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

CHAT = {"model": "stub-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5}


def _samples(text: str) -> dict[str, float]:
    """Every sample of an exposition but histogram buckets, keyed by name and labels (`name{a="b"}`)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.endswith("_bucket"):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def test_latencies_as_the_client_sees_them() -> None:
    """E2E and queue time for every answer; TTFT and time per output token only for streamed ones."""
    async with running_stub(latency_s=0.05, token_interval_s=0.01) as (_, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=2, lazy_prediction=False)
        predictor = FunctionPredictor(lambda r: r.max_tokens, delay_s=0.02)  # awaited: it counts as queue time
        async with running_gateway(config, predictor=predictor) as (_, url), httpx.AsyncClient() as client:
            assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200
            plain = _samples((await client.get(url + "/metrics")).text)
            stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
            assert (await client.post(url + "/v1/chat/completions", json=stream)).status_code == 200
            streamed = _samples((await client.get(url + "/metrics")).text)
    assert plain["lengthwise:e2e_request_latency_seconds_count"] == 1
    assert plain["lengthwise:request_queue_time_seconds_count"] == 1
    assert plain["lengthwise:time_to_first_token_seconds_count"] == 0  # no first token seen apart from the rest
    # The queue time holds the prediction (0.02 s), the E2E also the backend's (0.05 s before its first byte).
    assert 0.02 <= plain["lengthwise:request_queue_time_seconds_sum"]
    assert plain["lengthwise:request_queue_time_seconds_sum"] + 0.05 <= plain["lengthwise:e2e_request_latency_seconds_sum"]
    assert streamed["lengthwise:e2e_request_latency_seconds_count"] == 2
    assert streamed["lengthwise:time_to_first_token_seconds_count"] == 1
    assert streamed["lengthwise:request_time_per_output_token_seconds_count"] == 1
    ttft = streamed["lengthwise:time_to_first_token_seconds_sum"]
    e2e = streamed["lengthwise:e2e_request_latency_seconds_sum"] - plain["lengthwise:e2e_request_latency_seconds_sum"]
    assert 0.07 <= ttft < e2e
    # Five tokens 0.01 s apart: four intervals after the first.
    assert 0.01 <= streamed["lengthwise:request_time_per_output_token_seconds_sum"]
    assert streamed["lengthwise:request_generation_tokens_sum"] == 10


async def test_requests_waiting_and_running_per_backend() -> None:
    """One seat: while one request runs on a hung backend, the others wait in the gateway for it."""
    async with running_stub(fault="hang") as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", max_inflight=1)
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: 5.0)) as (gateway, url), \
                httpx.AsyncClient() as client:
            requests = [asyncio.create_task(client.post(url + "/v1/chat/completions", json=CHAT)) for _ in range(3)]
            backend = gateway.pool.backends[0]
            async with asyncio.timeout(10):
                while (backend.waiting, stub.inflight) != (2, 1):
                    await asyncio.sleep(0.01)
            during = _samples((await client.get(url + "/metrics")).text)
            for r in requests:
                r.cancel()
            await asyncio.gather(*requests, return_exceptions=True)
            async with asyncio.timeout(10):  # the gateway sees the clients leave
                while backend.inflight or backend.waiting:
                    await asyncio.sleep(0.01)
            after = _samples((await client.get(url + "/metrics")).text)
    assert during[f'lengthwise:num_requests_waiting{{backend="{stub_url}"}}'] == 2
    assert during[f'lengthwise:num_requests_running{{backend="{stub_url}"}}'] == 1
    assert after[f'lengthwise:num_requests_waiting{{backend="{stub_url}"}}'] == 0
    assert after[f'lengthwise:num_requests_running{{backend="{stub_url}"}}'] == 0
    assert after['lengthwise_requests_total{endpoint="chat",status="499"}'] == 3
    assert "lengthwise:e2e_request_latency_seconds_count" in after  # a histogram with no answers reads 0


async def test_no_created_series_and_no_undefined_values() -> None:
    """`_created` twins of every counter cluttered /metrics; the tau gauges read NaN while the outputs had no
    variance, and the CPU per request before the first answer."""
    undefined = {"choice": "none", "candidates": {"flat": {"n": 3, "tau": None, "ci_low": None},
                                                   "ranked": {"n": 3, "tau": 0.5, "ci_low": -0.2}}}
    predictor = FunctionPredictor(lambda r: 1.0, name="auto")
    predictor.status = lambda: undefined  # type: ignore[method-assign]  # as AutoPredictor reports
    async with running_stub() as (_, stub_url):
        async with running_gateway(GatewayConfig(backends=(stub_url,)), predictor=predictor) as (_, url), \
                httpx.AsyncClient() as client:
            fresh = (await client.get(url + "/metrics")).text
            assert (await client.post(url + "/v1/chat/completions", json=CHAT)).status_code == 200
            used = (await client.get(url + "/metrics")).text
    for text in (fresh, used):
        assert "_created" not in text
        assert not re.search(r"\b(NaN|nan)\b", text)
    samples = _samples(used)
    assert samples['lengthwise_predictor_tau{predictor="ranked"}'] == 0.5
    assert 'lengthwise_predictor_tau{predictor="flat"}' not in samples
    assert 'lengthwise_predictor_window_requests{predictor="flat"}' in samples
    assert "lengthwise_gateway_cpu_seconds_per_request" not in fresh
    assert samples["lengthwise_gateway_cpu_seconds_per_request"] > 0
