"""Preemption in queue mode (--preempt): a long running request yields to a short waiting one and
is resumed as a continuation; the client sees the same answer it would have got unpreempted."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from lengthwise.core.policy import Job, make_policy
from lengthwise.gateway.config import GatewayConfig, PreemptSettings
from lengthwise.gateway.resumable import not_resumable
from lengthwise.testing.answers import (answer_text, answer_usage, completion_body, completion_path, masked,
                                        sse_events)
from lengthwise.testing.gateway import FunctionPredictor, running_gateway, running_stub

#: Non-ASCII, JSON escapes, newlines: a stitched answer must carry them exactly.
VOCABULARY = ("Hé", "llo ", "wörld", "\n", "日本 ", '"q" ', "\\ ")
LONG, SHORT = 120, 4


def _expected(tokens: int) -> str:
    return "".join(VOCABULARY[i % len(VOCABULARY)] for i in range(tokens))


def _body(endpoint: str, max_tokens: int, stream: bool, text: str = "tell me", **extra: Any) -> dict[str, Any]:
    return completion_body(endpoint, "stub-model", text, max_tokens, stream, **extra)


async def _preempted_and_alone(endpoint: str, stream: bool, preempt: str = "margin=2,max=1,early=0.5",
                               **extra: Any) -> tuple[httpx.Response, httpx.Response, httpx.Response, Any, None]:
    """The long request alone, then again with a short one arriving while it decodes."""
    async with running_stub(vocabulary=VOCABULARY, token_interval_s=0.01) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", policy="srpt", max_inflight=1,
                               preempt=PreemptSettings.parse(preempt))
        predictor = FunctionPredictor(lambda r: r.max_tokens)
        async with running_gateway(config, predictor=predictor) as (gateway, url), \
                httpx.AsyncClient(timeout=30) as client:
            path = url + completion_path(endpoint)
            alone = await client.post(path, json=_body(endpoint, LONG, stream, **extra))
            long = asyncio.create_task(client.post(path, json=_body(endpoint, LONG, stream, **extra)))
            while stub.generated_tokens < LONG + 10:  # the long one is decoding
                await asyncio.sleep(0.005)
            short = await client.post(path, json=_body(endpoint, SHORT, stream, text="hi"))
            still_running = not long.done()
            return alone, await long, short, (gateway, stub, still_running), None


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize("endpoint", ["chat", "completion"])
async def test_a_preempted_answer_is_the_unpreempted_answer(endpoint: str, stream: bool) -> None:
    alone, long, short, (gateway, stub, still_running), _ = await _preempted_and_alone(endpoint, stream)
    assert alone.status_code == long.status_code == short.status_code == 200
    assert still_running  # the short request finished while the long one was still under way
    continuations = [r for r in stub.received if r.body.get("continue_final_message") or
                     (isinstance(r.body.get("prompt"), list))]
    assert len(continuations) == 1 and gateway.metrics.preemptions._value.get() == 1
    assert answer_text(endpoint, long.content, stream) == _expected(LONG)
    assert masked(long.content) == masked(alone.content)  # byte for byte, but for id and created
    usage, alone_usage = (answer_usage(r.content, stream) for r in (long, alone))
    assert usage["completion_tokens"] == LONG and usage["prompt_tokens"] == alone_usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + LONG
    if stream:
        events = sse_events(long.content)
        assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
        assert len({(e["id"], e["created"]) for e in events if e != "[DONE]"}) == 1
        assert all(c.get("token_ids") is None for e in events if e != "[DONE]" for c in e["choices"])



async def test_the_continuation_resumes_where_the_answer_was_cut() -> None:
    _, long, _, (gateway, stub, _), _ = await _preempted_and_alone("chat", True)
    first, continuation = [r.body for r in stub.received if r.body.get("messages", [{}])[0].get("content") ==
                           "tell me"][1:3]
    assert first["return_token_ids"] is True and "continue_final_message" not in first
    done = continuation["messages"][-1]["content"]
    assert continuation["messages"][-1]["role"] == "assistant" and continuation["add_generation_prompt"] is False
    assert _expected(LONG).startswith(done) and 0 < len(done) < len(_expected(LONG))
    generated = LONG - continuation["max_tokens"]
    assert done == _expected(generated)


async def test_max_zero_never_preempts() -> None:
    _, long, _, (gateway, stub, still_running), _ = await _preempted_and_alone("chat", True, "max=0")
    assert not still_running and gateway.metrics.preemptions._value.get() == 0
    assert answer_text("chat", long.content, True) == _expected(LONG)


async def test_a_request_that_cannot_be_resumed_is_never_preempted() -> None:
    _, long, _, (gateway, stub, still_running), _ = await _preempted_and_alone("chat", True, stop=["zzz"])
    assert not still_running and gateway.metrics.preemptions._value.get() == 0
    assert gateway.metrics.not_preemptible.labels("stop strings")._value.get() == 2
    assert not any(r.body.get("continue_final_message") for r in stub.received)


async def test_the_openai_client_sees_one_stream() -> None:
    openai = pytest.importorskip("openai")
    async with running_stub(vocabulary=VOCABULARY, token_interval_s=0.01) as (stub, stub_url):
        config = GatewayConfig(backends=(stub_url,), mode="queue", policy="srpt", max_inflight=1,
                               preempt=PreemptSettings.parse("early=0.5"))
        async with running_gateway(config, predictor=FunctionPredictor(lambda r: r.max_tokens)) as (gateway, url):
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused")

            async def long() -> list[Any]:
                stream = await client.chat.completions.create(
                    model="stub-model", messages=[{"role": "user", "content": "tell me"}], max_tokens=LONG,
                    stream=True, stream_options={"include_usage": True})
                return [chunk async for chunk in stream]

            task = asyncio.create_task(long())
            while stub.generated_tokens < 10:
                await asyncio.sleep(0.005)
            await client.chat.completions.create(model="stub-model", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=SHORT)
            chunks = await task
            await client.close()
    assert gateway.metrics.preemptions._value.get() == 1
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == _expected(LONG)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == LONG
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1


@pytest.mark.parametrize("body, reason", [
    ({"n": 2}, "n > 1"), ({"logprobs": True}, "logprobs"), ({"echo": True}, "echo"),
    ({"tools": [{"type": "function"}]}, "tools"), ({"response_format": {"type": "json_object"}}, "guided decoding"),
    ({"seed": 1}, "seed with sampling"), ({"stop": "\n"}, "stop strings"),
    ({"presence_penalty": 0.5}, "output penalties"),
    ({"continue_final_message": True}, "client continues a message"),
    ({"stream_options": {"continuous_usage_stats": True}}, "token ids or continuous usage asked"),
])
def test_what_cannot_be_resumed_says_why(body: dict[str, Any], reason: str) -> None:
    assert not_resumable("chat", {"messages": [], **body}) == reason


@pytest.mark.parametrize("body", [{}, {"seed": 1, "temperature": 0}, {"stop": []}, {"temperature": 0.7},
                                  {"repetition_penalty": 1.1}, {"n": 1}, {"logprobs": False}])
def test_what_can_be_resumed(body: dict[str, Any]) -> None:
    assert not_resumable("chat", {"messages": [], **body}) is None
    assert not_resumable("completion", {"prompt": "x", **body}) is None
    assert not_resumable("completion", {"prompt": ["a", "b"], **body}) == "several prompts"


def test_preempt_settings_name_what_is_wrong() -> None:
    assert PreemptSettings.parse("") == PreemptSettings()
    assert PreemptSettings.parse("margin=3,max=2,early=0") == PreemptSettings(margin=3, max=2, early=0)
    with pytest.raises(ValueError, match="unknown field.*marge"):
        PreemptSettings.parse("marge=2")
    with pytest.raises(ValueError, match="early"):
        PreemptSettings.parse("early=2")
    with pytest.raises(ValueError, match="--mode queue"):
        GatewayConfig(backends=("http://127.0.0.1:1",), preempt=PreemptSettings())


def test_a_preempted_job_keeps_its_first_deadline_and_an_overdue_one_is_known() -> None:
    policy = make_policy("sst+deadline")
    job = Job("a", arrival=0.0, predicted_tokens=100)
    assert not policy.overdue(job, 1e9)  # admitted at once: it was promised nothing
    job.deadline = 5.0
    policy.fcfs.reference = 100.0  # waits have grown since: a new promise would be later
    policy.enqueued(job, 10.0)  # queued again after a preemption, later than its promise
    assert job.deadline == 5.0 and policy.overdue(job, 10.0) and not policy.overdue(job, 4.0)
    assert not make_policy("sjf").overdue(job, 10.0)


# ---- the decision, without a backend --------------------------------------------------------------

def _preemptor(policy_spec: str, settings: str = "margin=2,max=1,early=0.25") -> tuple[Any, Any, Any]:
    from lengthwise.gateway.backends import BackendPool
    from lengthwise.gateway.metrics import GatewayMetrics
    from lengthwise.gateway.preemptor import Preemptor
    from lengthwise.gateway.scheduler import Scheduler

    policy = make_policy(policy_spec)
    scheduler = Scheduler(policy, max_inflight=1, max_queue=8, clock=lambda: 100.0)
    pool = BackendPool(["http://127.0.0.1:1"], slack_tokens=4096)
    preemptor = Preemptor(PreemptSettings.parse(settings), policy, scheduler, GatewayMetrics(pool))
    return preemptor, scheduler, pool.backends[0]


def _running(preemptor: Any, backend: Any, predicted: float, generated: int, max_tokens: int = 512) -> Any:
    from lengthwise.gateway.flight import Flight
    from lengthwise.gateway.stitch import Stitcher
    from lengthwise.predict.base import Prediction
    from lengthwise.predict.remaining import LengthDistribution

    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": max_tokens}
    f = Flight("long", "chat", body, b"", Job("long", arrival=0.0, predicted_tokens=predicted), [], 0.0,
               backend=backend)
    f.prediction = Prediction(predicted, "test")
    f.length = LengthDistribution.of(f.prediction, max_tokens)
    f.stitcher = Stitcher("chat", True, False)
    f.stitcher.transcript.token_ids = list(range(generated))
    preemptor.started(f)
    return f


async def _queue_short(scheduler: Any, backend: Any, predicted: float = 4) -> asyncio.Task[None]:
    task = asyncio.create_task(scheduler.admit(Job("short", arrival=50.0, predicted_tokens=predicted), backend))
    await asyncio.sleep(0)  # it queues (the one seat is taken) and the preemptor looks
    return task


async def _decision(policy: str, predicted: float, generated: int, settings: str = "margin=2,max=1,early=0.25",
                    deadline: float | None = None, resume_cost_s: float | None = None,
                    reference_s: float = 1000.0) -> bool:
    preemptor, scheduler, backend = _preemptor(policy, settings)
    preemptor.resume_cost.measured_s = resume_cost_s
    if hasattr(preemptor.policy, "fcfs"):  # a measured engine: 1 s of work per second
        fcfs = preemptor.policy.fcfs
        fcfs.joined(1.0), fcfs.joined(1.0), fcfs.left(1.0, 0.0), fcfs.left(1.0, 1.0)
        fcfs.reference = reference_s  # the FCFS-equivalent waits of this workload so far
    await scheduler.admit(Job("long", arrival=0.0), backend)  # takes the seat
    f = _running(preemptor, backend, predicted, generated)
    f.job.deadline = deadline
    waiting = await _queue_short(scheduler, backend)
    waiting.cancel()
    return f.yield_requested


async def test_early_in_its_decode_a_long_request_yields() -> None:
    assert await _decision("sst+deadline", predicted=400, generated=20)


async def test_an_overdue_request_is_never_preempted() -> None:
    assert not await _decision("sst+deadline", predicted=400, generated=20, deadline=99.0)
    assert await _decision("sst+deadline", predicted=400, generated=20, deadline=101.0)


async def test_an_overdue_waiting_request_preempts_no_one() -> None:
    # No wait ahead of it and none in this workload so far: its deadline is its arrival, so it is
    # overdue at once and goes next by admission order; preempting for it would gain nothing.
    assert not await _decision("sst+deadline", predicted=400, generated=20, reference_s=0.0)


async def test_late_in_its_decode_only_a_gain_above_the_resume_cost_preempts() -> None:
    # 300 of 400 predicted tokens done: past the early share; at 0.1 ms of engine time per token
    # its remaining service is ~10 ms, against the short one's 0.4 ms.
    assert await _decision("sst", predicted=400, generated=300, resume_cost_s=0.001)
    assert not await _decision("sst", predicted=400, generated=300, resume_cost_s=1.0)


async def test_the_margin_and_the_limit_hold() -> None:
    assert not await _decision("srpt", predicted=6, generated=1)  # 5 left is not twice the short one's 4
    assert not await _decision("sst", predicted=400, generated=20, settings="max=0")


def test_a_running_request_is_keyed_by_its_remaining_service() -> None:
    preemptor, _, backend = _preemptor("sst")
    f = _running(preemptor, backend, predicted=100, generated=0)
    preemptor.reprice(f)
    fresh = preemptor.policy.key(f.job, 0.0)
    f.stitcher.transcript.token_ids = list(range(400))  # it outlived its prediction
    preemptor.reprice(f)
    assert f.job.generated_tokens == 400 and 400 < f.job.predicted_tokens <= 512
    assert 0 < preemptor.policy.key(f.job, 0.0) < 112 / 100 * fresh


def test_the_remaining_length_given_what_was_generated() -> None:
    from lengthwise.predict.base import Prediction
    from lengthwise.predict.learned.distribution import capped_quantiles, expected_capped
    from lengthwise.predict.remaining import LengthDistribution

    assumed = LengthDistribution.of(Prediction(100.0, "test"), 512)
    assert assumed.expected_total(0) == pytest.approx(100.0, rel=1e-3)
    assert assumed.expected_remaining(50) > assumed.expected_remaining(0) - 50  # heavy tail: not just 100 - 50
    assert assumed.expected_total(511) == pytest.approx(512, abs=1) and assumed.expected_total(600) == 512
    quantiles = capped_quantiles(4.0, 0.8, 512, (0.1, 0.25, 0.5, 0.75, 0.9))
    fitted = LengthDistribution.of(Prediction(10.0, "test", quantiles), 512)  # the quantiles, not the 10, count
    assert (fitted.mu, fitted.sigma) == (pytest.approx(4.0), pytest.approx(0.8))
    assert fitted.expected_total(0) == pytest.approx(expected_capped(4.0, 0.8, 512))


async def test_a_request_queued_again_after_its_preemption_is_never_refused() -> None:
    from lengthwise.gateway.scheduler import QueueFull

    _, scheduler, backend = _preemptor("srpt")
    scheduler.max_queue = 1
    await scheduler.admit(Job("running", arrival=0.0), backend)
    waiting = await _queue_short(scheduler, backend)
    with pytest.raises(QueueFull):
        await scheduler.admit(Job("new", arrival=1.0), backend)
    again = asyncio.create_task(scheduler.admit(Job("preempted", arrival=0.0), backend, requeued=True))
    await asyncio.sleep(0)
    assert scheduler.waiting() == 2 and not again.done()
    waiting.cancel()
    again.cancel()


async def test_a_request_sent_with_the_fallback_is_judged_by_its_background_prediction() -> None:
    from lengthwise.predict.base import Prediction

    preemptor, _, backend = _preemptor("srpt")
    f = _running(preemptor, backend, predicted=256, generated=0)
    f.stitcher = None

    async def later() -> Prediction:
        return Prediction(40.0, "background")

    f.deferred = asyncio.ensure_future(later())
    preemptor.prepare(f)
    assert f.length is not None and f.length.expected_total(0) == pytest.approx(256, rel=1e-3)
    await f.deferred
    await asyncio.sleep(0)  # its done-callbacks run
    assert f.length.expected_total(0) == pytest.approx(40, rel=1e-3)
