"""The gateway's parts on their own: priority mapping, routing, the queue-mode scheduler, the SSE usage tap."""

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.config import GatewayConfig
from lengthwise.gateway.errors import GatewayError
from lengthwise.gateway.priority import BOUND, PriorityMap
from lengthwise.gateway.proxy import StreamTap
from lengthwise.gateway.scheduler import BackendGone, QueueFull, Scheduler
from lengthwise.gateway.validation import parse_body
from lengthwise.core.policy import Job, make_policy

# ---- priority -------------------------------------------------------------------------


def _config(**kw: object) -> GatewayConfig:
    return GatewayConfig(backends=("http://127.0.0.1:1",), **kw)  # type: ignore[arg-type]


def test_vllm_priority_is_the_rounded_key_lower_first() -> None:
    pmap = PriorityMap.for_config(_config(engine="vllm"))
    assert pmap is not None
    assert [pmap(k) for k in (4.0, 63.6, 0.2)] == [4, 64, 0]
    assert pmap.urgent < pmap(-1e12) < pmap(0) < pmap(1e12)


def test_sglang_priority_is_negated_unless_low_first() -> None:
    high_first = PriorityMap.for_config(_config(engine="sglang"))
    low_first = PriorityMap.for_config(_config(engine="sglang", sglang_low_first=True))
    assert high_first is not None and low_first is not None
    assert high_first(10) < high_first(2) < high_first.urgent == BOUND
    assert low_first(2) < low_first(10) and low_first.urgent == -BOUND


def test_openai_engine_has_no_priority_and_needs_queue_mode() -> None:
    assert PriorityMap.for_config(_config(engine="openai", mode="queue")) is None
    with pytest.raises(ValueError, match="queue"):
        _config(engine="openai", mode="priority")


@given(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=1e-3, max_value=1e3))
def test_priorities_stay_inside_the_bound(key: float, scale: float) -> None:
    pmap = PriorityMap(scale=scale)
    assert -BOUND < pmap(key) < BOUND


@pytest.mark.parametrize("bad", [{"backends": ()}, {"backends": ("ftp://x",)}, {"backends": ("http://h:1/v1",)},
                                 {"backends": ("http://h:1",), "max_inflight": 0}])
def test_config_rejects_bad_settings(bad: dict) -> None:
    with pytest.raises(ValueError):
        GatewayConfig(**bad)


# ---- routing ------------------------------------------------------------------------------


def _pool(n: int, slack: float = 100.0) -> BackendPool:
    return BackendPool([f"http://127.0.0.1:{9000 + i}" for i in range(n)], slack_tokens=slack)


def test_same_prefix_goes_to_the_same_backend_while_load_allows() -> None:
    pool = _pool(4)
    homes = {pool.choose(None, "system prompt A") for _ in range(10)}
    assert len(homes) == 1
    spread = {pool.choose(None, f"prompt {i}") for i in range(40)}
    assert len(spread) > 1  # different prefixes spread over the backends


def test_an_overloaded_home_sends_work_to_the_least_loaded() -> None:
    pool = _pool(3, slack=100)
    home = pool.choose(None, "p")
    assert home is not None
    pool.assign(home, 500)
    other = pool.choose(None, "p")
    assert other is not home and other.outstanding_tokens == 0
    pool.unassign(home, 500)
    assert pool.choose(None, "p") is home


def test_unhealthy_backends_leave_and_models_filter() -> None:
    pool = _pool(2)
    a, b = pool.backends
    a.models, b.models = frozenset({"m1"}), frozenset({"m2"})
    assert pool.choose("m2") is b and pool.choose("m1") is a
    assert not pool.model_exists("m3") and pool.model_exists("m1") and pool.model_exists(None)
    pool.mark_down(a, "test")
    assert pool.choose("m2") is b
    assert pool.choose("m1") is a  # the only one serving m1: tried even though down
    assert pool.choose(None) is b
    assert pool.choose(None, exclude=(b,)) is a
    assert pool.choose("m1", exclude=(a,)) is None


# ---- scheduler ------------------------------------------------------------------------------


async def test_queue_admits_by_policy_with_at_most_n_in_flight() -> None:
    pool = _pool(1)
    backend = pool.backends[0]
    sched = Scheduler(make_policy("sjf"), max_inflight=2, max_queue=10)
    order: list[str] = []

    async def request(name: str, tokens: float) -> None:
        await sched.admit(Job(name, arrival=0.0, predicted_tokens=tokens), backend)
        order.append(name)

    first = [asyncio.create_task(request(n, 100)) for n in ("a", "b")]
    await asyncio.gather(*first)
    waiting = [asyncio.create_task(request(n, t)) for n, t in (("long", 50), ("short", 1), ("mid", 10))]
    await asyncio.sleep(0)
    assert sched.running(backend) == 2 and sched.waiting(backend) == 3
    for _ in range(3):
        sched.release(backend)
        await asyncio.sleep(0)
    await asyncio.gather(*waiting)
    assert order == ["a", "b", "short", "mid", "long"]
    assert sched.running(backend) == 2


async def test_queue_full_cancel_and_eviction() -> None:
    backend = _pool(1).backends[0]
    sched = Scheduler(make_policy("fcfs"), max_inflight=1, max_queue=2)
    await sched.admit(Job("run", 0.0), backend)
    w1 = asyncio.create_task(sched.admit(Job("w1", 1.0), backend))
    w2 = asyncio.create_task(sched.admit(Job("w2", 2.0), backend))
    await asyncio.sleep(0)
    with pytest.raises(QueueFull):
        await sched.admit(Job("w3", 3.0), backend)
    w1.cancel()  # a client leaving while queued: out of the queue, no slot taken
    await asyncio.sleep(0)
    assert sched.waiting() == 1
    sched.evict(backend)
    with pytest.raises(BackendGone):
        await w2
    assert sched.waiting() == 0 and sched.running(backend) == 1
    sched.release(backend)
    assert sched.running(backend) == 0


async def test_a_slot_granted_to_a_cancelled_waiter_is_given_back() -> None:
    backend = _pool(1).backends[0]
    sched = Scheduler(make_policy("fcfs"), max_inflight=1, max_queue=5)
    await sched.admit(Job("run", 0.0), backend)
    waiter = asyncio.create_task(sched.admit(Job("w", 1.0), backend))
    await asyncio.sleep(0)
    sched.release(backend)  # grants the slot to "w" ...
    waiter.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert sched.running(backend) == 0


# ---- stream tap --------------------------------------------------------------------------------

ROLE = {"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
CHUNK = {"id": "c", "choices": [{"index": 0, "delta": {"content": '"usage" x'}, "finish_reason": None}]}
LAST = {"id": "c", "choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": "length"}]}
USAGE = {"id": "c", "choices": [], "usage": {"completion_tokens": 3}}


def _sse(*objs: object) -> bytes:
    return b"".join(f"data: {json.dumps(o)}\n\n".encode() for o in objs) + b"data: [DONE]\n\n"


def _chunked(stream: bytes, cuts: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(stream[pos : pos + cut])
        pos += cut
    return [*pieces, stream[pos:]]


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=30), st.booleans())
def test_tap_reads_usage_or_counts_tokens_whatever_the_chunking(cuts: list[int], with_usage: bool) -> None:
    events = (ROLE, CHUNK, CHUNK, LAST, USAGE) if with_usage else (ROLE, CHUNK, CHUNK, LAST)
    tap = StreamTap()
    for piece in _chunked(_sse(*events), cuts):
        tap.feed(piece)
    assert tap.result() == {"completion_tokens": 3}


def test_tap_counts_per_choice_for_completions_and_nothing_without_content() -> None:
    tap = StreamTap()
    tap.feed(_sse(*({"choices": [{"index": i, "text": "a"}]} for i in (0, 1, 0, 1, 1))))
    assert tap.result() == {"completion_tokens": 5}
    empty = StreamTap()
    empty.feed(b"data: not json\n\n" + _sse(ROLE))
    assert empty.result() is None


@pytest.mark.parametrize("choice, tokens", [
    ({"index": 0, "delta": {"content": '\\"'}}, 1),  # an escaped quote is content
    ({"index": 0, "delta": {"content": None}}, 0),
    ({"index": 0, "delta": {"content": "", "reasoning_content": "hmm"}}, 1),  # parsed: reasoning is set
    ({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}, 1),
    ({"index": 0, "delta": {"content": "", "tool_calls": None, "reasoning_content": None}}, 0),
    ({"index": 3, "text": "a"}, 1),
    ({"index": 0, "text": ""}, 0),
])
def test_tap_reads_a_chunk_from_its_bytes_as_parsing_would(choice: dict[str, Any], tokens: int) -> None:
    """One choice and no usage: the tap reads the chunk's bytes without parsing them; chunks with
    tool calls or reasoning are parsed, and spacing does not change what is read."""
    for separators in ((",", ":"), (", ", " : ")):
        tap = StreamTap()
        tap.feed(f"data: {json.dumps({'id': 'c', 'choices': [choice]}, separators=separators)}\n\n".encode())
        assert tap.result() == ({"completion_tokens": tokens} if tokens else None)


def test_unbounded_stream_tail_is_capped_and_not_recopied() -> None:
    """An upstream that never ends an event grew the tap's buffer without bound, copying all of it
    again for each chunk (quadratic: 8 MiB in 1 KiB chunks took minutes). Now it is linear, holds at
    most one event's worth, counts what it skipped, and reads the stream's later events as before."""
    tap = StreamTap()
    piece = b"data: " + b"x" * 1018
    for _ in range(8 * 1024):  # 8 MiB, no event end
        tap.feed(piece)
        assert len(tap._tail) <= StreamTap.MAX_EVENT_BYTES
    tap.feed(b"still the same event\n\n" + _sse(CHUNK, LAST))
    assert tap.overflow_bytes >= 8 * 1024 * 1024 - StreamTap.MAX_EVENT_BYTES
    assert tap.result() == {"completion_tokens": 2}


# ---- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, raw, param",
    [
        ("chat", b"{not json", None),
        ("chat", b"[1, 2]", None),
        ("chat", b'{"messages": "hi"}', "messages"),
        ("chat", b'{"messages": [{"content": "x"}]}', "messages"),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "model": 3}', "model"),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "stream"),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}', "max_tokens"),
        ("chat", b'{"messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        ("completion", b'{"prompt": 5}', "prompt"),
        ("completion", b'{"prompt": [1, "a"]}', "prompt"),
        ("completion", b"[" * 100_000 + b"]" * 100_000, None),
    ],
)
def test_bad_bodies_are_400_naming_the_field(endpoint: str, raw: bytes, param: str | None) -> None:
    with pytest.raises(GatewayError) as info:
        parse_body(endpoint, raw)  # type: ignore[arg-type]
    assert info.value.status == 400 and info.value.param == param


def test_good_bodies_pass_untouched() -> None:
    body = {"prompt": [[1, 2], [3]], "max_tokens": 4, "stream": None, "whatever": {"x": [1.5]}}
    assert parse_body("completion", json.dumps(body).encode()) == body


# ---- command line ------------------------------------------------------------------------------------


def test_serve_rejects_bad_flags_with_a_clear_message() -> None:
    import typer
    from typer.testing import CliRunner

    from lengthwise.gateway.cli import serve

    app = typer.Typer()
    app.command()(serve)
    for args, words in ((["--backend", "http://h:1/v1"], "without /v1"),
                        (["--backend", "http://h:1", "--engine", "openai"], "queue"),
                        (["--backend", "http://h:1", "--policy", "nope"], "unknown policy")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.parametrize("raw", [b'{"a": 1}', b'{"a": {"b": "}"}}  \n', b'{"priority": 5, "a": [1]}', b"{}",
                                 '{"a": "é"}'.encode("utf-16"), b'\xef\xbb\xbf{"a": 2}'])
def test_priority_is_added_to_the_clients_bytes(raw: bytes) -> None:
    from lengthwise.gateway.completions import with_priority

    body = json.loads(raw)
    assert json.loads(with_priority(raw, body, -7)) == {**body, "priority": -7}
