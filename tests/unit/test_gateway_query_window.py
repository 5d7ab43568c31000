"""The query-window rule (`--query-window W`): only the best W waiting requests are self-queried,
the rest wait ordered by the cheap prediction, and no request is lost or stuck on its query."""

import asyncio
import json
from dataclasses import dataclass

import httpx
import pytest

from lengthwise.core.policy import Job, make_policy
from lengthwise.gateway.app import Gateway
from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.scheduler import BackendGone, Scheduler
from lengthwise.predict.base import LengthRequest, Prediction
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub


class Queries:
    """Fake self-prediction queries: each records its request and answers when the test says so."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answers: dict[str, asyncio.Future[float]] = {}
        self.cancelled: list[str] = []

    def of(self, job: Job):
        async def query() -> None:
            self.asked.append(job.id)
            answer = self.answers[job.id] = asyncio.get_running_loop().create_future()
            try:
                job.predicted_tokens = await answer
            except asyncio.CancelledError:
                self.cancelled.append(job.id)
                raise
        return query

    def answer(self, name: str, tokens: float) -> None:
        self.answers[name].set_result(tokens)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _window_scheduler(size: int) -> tuple[Scheduler, object]:
    backend = BackendPool(["http://a:1"], slack_tokens=0.0).backends[0]
    return Scheduler(make_policy("sjf"), max_inflight=1, max_queue=20, clock=lambda: 0.0, query_window=size), backend


async def test_only_the_best_w_are_queried_and_admission_follows_their_answers() -> None:
    sched, backend = _window_scheduler(2)
    queries = Queries()
    admitted: list[str] = []
    await sched.admit(Job("run", 0.0), backend, query=None)  # a free seat, nothing waiting: at once, no query

    async def request(name: str, cheap: float) -> None:
        job = Job(name, 0.0, predicted_tokens=cheap)
        await sched.admit(job, backend, query=queries.of(job))
        admitted.append(name)

    cheap = {"c50": 50, "c10": 10, "c40": 40, "c20": 20, "c30": 30}
    tasks = [asyncio.create_task(request(name, tokens)) for name, tokens in cheap.items()]
    await _settle()
    assert queries.asked == ["c50", "c10"]  # the window's W places taken by the first two, no other query
    assert sched.waiting(backend) == 5 and sched.window(backend).querying() == 2
    queries.answer("c50", 1)  # the self-prediction reorders the window ...
    queries.answer("c10", 99)
    await _settle()
    assert queries.asked == ["c50", "c10"]  # ... which is full (two queried, waiting for a seat)
    sched.release(backend)
    await _settle()
    assert admitted == ["c50"]
    assert queries.asked == ["c50", "c10", "c20"]  # its place went to the best by the cheap prediction
    for name in ("c20", "c30", "c40"):
        queries.answer(name, 5)
        await _settle()
        sched.release(backend)
        await _settle()
    sched.release(backend)
    await asyncio.gather(*tasks)
    assert queries.asked == ["c50", "c10", "c20", "c30", "c40"]  # each once; outside the window, in cheap order
    assert admitted == ["c50", "c20", "c30", "c40", "c10"]  # by the answers of the queried ones


async def test_a_request_leaving_the_window_gives_its_place_to_the_next() -> None:
    sched, backend = _window_scheduler(1)
    queries = Queries()
    await sched.admit(Job("run", 0.0), backend)
    jobs = {name: Job(name, 0.0, predicted_tokens=tokens) for name, tokens in (("a", 1), ("b", 2), ("c", 3))}
    waits = {name: asyncio.create_task(sched.admit(job, backend, query=queries.of(job))) for name, job in jobs.items()}
    await _settle()
    assert queries.asked == ["a"]
    waits["a"].cancel()  # its client leaves while its query runs: the query is dropped
    await _settle()
    assert queries.cancelled == ["a"] and queries.asked == ["a", "b"]
    queries.answer("b", 7)
    await _settle()
    waits["b"].cancel()  # queried, then gone before a seat freed: the next takes its place
    await _settle()
    assert queries.asked == ["a", "b", "c"] and sched.waiting(backend) == 1
    queries.answer("c", 7)
    sched.release(backend)
    await waits["c"]  # admitted: nothing left waiting or stuck
    assert sched.waiting(backend) == 0 and sched.running(backend) == 1


async def test_a_failed_query_leaves_the_cheap_prediction_and_eviction_reaches_every_request() -> None:
    sched, backend = _window_scheduler(2)
    await sched.admit(Job("run", 0.0), backend)

    async def broken() -> None:
        raise RuntimeError("the engine refused the query")

    failed = Job("failed", 0.0, predicted_tokens=3)
    admitted = asyncio.create_task(sched.admit(failed, backend, query=broken))
    await _settle()
    assert sched.window(backend).ready.peek(0.0) is failed and failed.predicted_tokens == 3
    sched.release(backend)
    await admitted  # admitted on its cheap prediction
    queries = Queries()
    jobs = [Job(f"w{i}", 0.0, predicted_tokens=i) for i in range(4)]  # two queried, two not yet
    waits = [asyncio.create_task(sched.admit(job, backend, query=queries.of(job))) for job in jobs]
    await _settle()
    sched.evict(backend)
    for wait in waits:
        with pytest.raises(BackendGone):
            await wait
    assert sched.waiting() == 0 and sorted(queries.cancelled) == ["w0", "w1"]


def _chat(max_tokens: int, text: str) -> dict:
    return {"model": "stub-model", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}


@dataclass
class SlowSelf(FunctionPredictor):
    """Stands in for the self-query: costly, 50 ms an answer (the reverse of the cheap order), never
    for a prompt saying "stuck"; counts the queries under way at once."""

    name: str = "self"
    costly: bool = True
    inside: int = 0
    most: int = 0

    async def predict(self, request: LengthRequest) -> Prediction:
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            await asyncio.sleep(3600 if "stuck" in _text(request.body) else 0.05)
            tokens = 1000.0 - (request.max_tokens or 0)
            return Prediction(tokens, self.name, raw=tokens)
        finally:
            self.inside -= 1


def _text(body: dict) -> str:
    return body["messages"][0]["content"]


async def test_the_gateway_self_predicts_only_inside_the_window_and_falls_back_on_a_stuck_query() -> None:
    """End to end with the stub engine: the costly predictor runs within the window only (never more
    than W at once), its answers order admission there, and a query that never answers costs its
    request only the prediction timeout: it goes with the cheap prediction."""
    costly, cheap = SlowSelf(lambda r: 0.0), FunctionPredictor(lambda r: r.max_tokens, name="cheap")
    async with running_stub(latency_s=0.3) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", policy="sjf", max_inflight=1, query_window=2,
                               prediction_timeout_s=0.5, lazy_prediction=False)
        async with running_gateway(config, predictor=costly, cheap_predictor=cheap) as (gateway, url), \
                httpx.AsyncClient(timeout=30) as client:
            scheduler, backend = gateway.scheduler, gateway.pool.backends[0]
            assert scheduler is not None
            sent = []
            for n, text in ((100, "first"), (5, "r5"), (6, "r6"), (7, "r7"), (8, "r8"), (9, "stuck")):
                sent.append(asyncio.create_task(client.post(url + "/v1/chat/completions", json=_chat(n, text))))
                while scheduler.waiting(backend) + scheduler.running(backend) < len(sent):  # taken in, in order
                    await asyncio.sleep(0.005)
            responses = await asyncio.gather(*sent)
            status = (await client.get(url + "/lengthwise/status")).json()
            await gateway.completions.predicting.settle()
    assert all(r.status_code == 200 for r in responses)
    assert costly.most == 2  # never more queries than the window holds
    sources = {_text(json.loads(r.request.content)): r.headers["x-lengthwise-predictor"] for r in responses}
    assert [text for text, source in sources.items() if source.startswith("self")] == ["r5", "r6", "r7", "r8"]
    assert sources["stuck"].startswith("cheap") and sources["first"].startswith("cheap")  # timeout; a free seat
    order = [r.body["max_tokens"] for r in stub.received]
    assert order[0] == 100 and sorted(order) == [5, 6, 7, 8, 9, 100]
    assert order.index(6) < order.index(5)  # the window's first two, reordered by their self-predictions
    assert status["query_window"] == {"size": 2, "cheap_predictor": "cheap"}
    assert len(costly.observed) == 4 and len(cheap.observed) == 2  # each learns from its own predictions


def test_the_rule_needs_the_gateways_own_queue_and_a_cheap_predictor() -> None:
    with pytest.raises(ValueError, match="query-window"):
        GatewayConfig(backends=("http://a:1",), mode="priority", query_window=4)
    with pytest.raises(ValueError, match="query-window"):
        GatewayConfig(backends=("http://a:1",), mode="queue", query_window=4, redis_url="redis://r:6379/0")
    config = GatewayConfig(backends=("http://a:1",), mode="queue", query_window=4)
    with pytest.raises(ValueError, match="engine time"):
        Gateway(config, predictor=FunctionPredictor(lambda r: 1.0),
                cheap_predictor=FunctionPredictor(lambda r: 1.0, costly=True))
