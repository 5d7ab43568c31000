"""The automatic predictor choice in front of the real engine: the status reports measured quality."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from lengthwise.gateway.config import GatewayConfig
from lengthwise.testing.gateway import running_gateway

pytestmark = pytest.mark.integration

PROMPTS = ("Answer with one word: what colour is the sky?", "List twelve fruits, one per line.",
           "Reply with only the number: 2 + {i} = ?", "Write a short poem about the number {i}.",
           "Say 'ok'.", "Explain in detail how a hash map works, with an example in Python.")
REQUESTS = 20


async def test_status_reports_the_measured_quality_of_each_candidate(engine) -> None:
    spec = "auto:candidates=self|prompt-length,sample=1,min_requests=10"
    # Queue mode sends no priority: on a shared engine, other clients' requests (priority 0)
    # would otherwise go ahead of every request here (priority = predicted tokens).
    config = GatewayConfig(backends=(engine.url,), mode="queue", max_inflight=engine.max_num_seqs,
                           predictor=spec, prediction_timeout_s=60)
    async with running_gateway(config) as (gateway, url), httpx.AsyncClient(timeout=300) as client:
        slots = asyncio.Semaphore(engine.max_num_seqs)

        async def ask(i: int) -> None:
            text = f"{PROMPTS[i % len(PROMPTS)].format(i=i)} (question {i})"  # a window counts a prompt once
            body = {"model": engine.model, "messages": [{"role": "user", "content": text}], "max_tokens": 24,
                    "temperature": 0}
            async with slots:
                r = await client.post(url + "/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text

        await asyncio.gather(*(ask(i) for i in range(REQUESTS)))
        # Candidates not chosen predict in the background and learn in the learning worker:
        # wait until the last completion has reached them.
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            await gateway.completions.predicting.settle()
            status = (await client.get(url + "/lengthwise/status")).json()
            counts = [c["n"] for c in status["status"]["candidates"].values()]
            if min(counts, default=0) >= REQUESTS or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.5)
        metrics = (await client.get(url + "/metrics")).text
    print(status)  # the measured figures, for the report (-s)
    selection = status["status"]
    assert status["predictor"] == "auto" and selection["requests"] == REQUESTS
    candidates = selection["candidates"]
    assert set(candidates) == {"prompt-length", next(n for n in candidates if n.startswith("self"))}
    assert candidates["prompt-length"]["n"] == REQUESTS
    for name, quality in candidates.items():
        # A self-prediction that is not chosen runs beside its request: one may end after it.
        assert quality["n"] >= REQUESTS // 2 and quality["sampled_fraction"] == 1.0, name
        if quality["tau"] is not None:
            assert -1 <= quality["tau"] <= 1
    chosen = selection["choice"]
    assert chosen == "none" or candidates[chosen]["ci_low"] > 0  # chosen only when significantly > 0
    assert f'lengthwise_predictor_chosen{{predictor="{chosen}"}} 1.0' in metrics
