"""The shared queue's Lua scripts, the scheduler's changes of path and the shared in-flight counts, on
fakeredis (lupa runs the Lua).

The real thing, three gateway processes and a real redis-server, is tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import asyncio

import fakeredis
import pytest

from lengthwise.core.policy import Job, make_policy
from lengthwise.gateway.backends import BackendPool
from lengthwise.gateway.shared_inflight import EXPIRES_S, SharedInflight
from lengthwise.gateway.shared_queue import SharedQueue, member
from lengthwise.gateway.shared_scheduler import SharedScheduler

B = "backend"


def _queues(*replicas: str, seats: int = 1, lease_s: float = 5.0) -> tuple[fakeredis.FakeServer, list[SharedQueue]]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    return server, [SharedQueue(client, name, seats, lease_s) for name in replicas]


def _m(arrival: float, replica: str, request: str) -> str:
    return member(arrival, replica, B, request)


async def test_seats_go_to_the_best_key_whichever_replica_queued_it() -> None:
    _, (a, b) = _queues("a", "b")
    for q in (a, b):
        assert not (await q.heartbeat({B: []}, 0.0))[B].known  # first beat: Redis did not know it yet
    first = await a.enqueue(B, _m(1, "a", "run"), 100.0, 1.0)
    assert first.granted == [_m(1, "a", "run")] and first.running == 1
    await a.enqueue(B, _m(2, "a", "long"), 50.0, 2.0)
    await b.enqueue(B, _m(3, "b", "short"), 10.0, 3.0)
    tie = await a.enqueue(B, _m(4, "a", "tie"), 50.0, 4.0)
    assert tie.granted == [] and tie.waiting == 3
    # The run ends: the seat goes to b's request (best key); b hears it on its grant list.
    after = await a.leave(B, _m(1, "a", "run"), 5.0)
    assert after.granted == [] and after.running == 1
    assert await b.next_grant(0.1) == _m(3, "b", "short")
    # Then a's, equal keys by arrival: granted by b's call, so pushed to a's list; by a's own, in the reply.
    assert (await b.leave(B, _m(3, "b", "short"), 6.0)).granted == []
    assert await a.next_grant(0.1) == _m(2, "a", "long")
    assert (await a.leave(B, _m(2, "a", "long"), 7.0)).granted == [_m(4, "a", "tie")]
    assert await a.next_grant(0.1) is None


async def test_a_dead_replicas_requests_are_skipped_and_its_leases_expire() -> None:
    server, (a, b) = _queues("a", "b", lease_s=2.0)
    await a.heartbeat({B: []}, 0.0)
    await b.heartbeat({B: []}, 0.0)
    await b.enqueue(B, _m(1, "b", "run"), 1.0, 1.0)  # b holds the seat (lease to 3.0)
    await b.enqueue(B, _m(2, "b", "queued"), 1.0, 1.5)
    await a.enqueue(B, _m(3, "a", "waits"), 5.0, 1.6)
    # b is killed: it renews nothing. Its replica key expires (real time, PX), its lease at 3.0 (queue time).
    await fakeredis.FakeAsyncRedis(server=server).delete("lengthwise:replica:b")
    assert (await a.heartbeat({B: []}, 2.9))[B].granted == []  # the lease still holds
    beat = (await a.heartbeat({B: []}, 3.1))[B]
    assert beat.granted == [_m(3, "a", "waits")]  # b's queued request was dropped, not leased a seat
    assert beat.running == 1 and beat.waiting == 0


async def test_a_key_switch_applies_at_its_instant() -> None:
    _, (a,) = _queues("a")
    await a.heartbeat({B: []}, 0.0)
    await a.enqueue(B, _m(0, "a", "run"), 0.0, 0.0)
    await a.enqueue(B, _m(1, "a", "short"), 10.0, 1.0)
    await a.enqueue(B, _m(2, "a", "long"), 1000.0, 2.0, switch_at=5.0, next_key=-1e12)  # overdue at 5 s
    assert (await a.leave(B, _m(0, "a", "run"), 4.0)).granted == [_m(1, "a", "short")]
    await a.enqueue(B, _m(4, "a", "shorter"), 1.0, 4.5)
    assert (await a.leave(B, _m(1, "a", "short"), 6.0)).granted == [_m(2, "a", "long")]


async def test_a_heartbeat_recreates_leases_redis_lost() -> None:
    server, (a,) = _queues("a", seats=2)
    await a.heartbeat({B: []}, 0.0)
    await a.enqueue(B, _m(1, "a", "run"), 1.0, 1.0)
    await fakeredis.FakeAsyncRedis(server=server).flushall()  # Redis restarted empty
    beat = (await a.heartbeat({B: [_m(1, "a", "run")]}, 2.0))[B]
    assert not beat.known and beat.running == 1


# ---- the scheduler across a Redis outage ------------------------------------------------------


def _scheduler(server: fakeredis.FakeServer, max_inflight: int = 1) -> tuple[SharedScheduler, BackendPool]:
    pool = BackendPool(["http://b0"], slack_tokens=0.0)
    client = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    queue = SharedQueue(client, "r", max_inflight, lease_s=3.0)
    clock = asyncio.get_running_loop().time
    return SharedScheduler(make_policy("sjf"), max_inflight, 10, clock, queue, pool, "redis://fake"), pool


async def test_waiters_move_to_the_local_queue_and_back_without_loss() -> None:
    server = fakeredis.FakeServer()
    sched, pool = _scheduler(server)
    backend = pool.backends[0]
    await sched._beat()
    assert sched.connected
    release_run = await sched.admit(Job("run", 0.0, predicted_tokens=5), backend)
    waiter = asyncio.create_task(sched.admit(Job("w", 1.0, predicted_tokens=1), backend))
    await asyncio.sleep(0.05)
    assert sched.waiting(backend) == 1 and not waiter.done()
    server.connected = False  # Redis goes away
    with pytest.raises(Exception):
        await sched._beat()
    sched._fall_back(ConnectionError("down"))
    await asyncio.sleep(0.05)
    assert not sched.connected and sched.fallbacks == 1
    assert sched.waiting(backend) == 1 and not waiter.done()  # in the local queue now, behind "run"'s seat
    release_run()  # released locally: the local queue admits the waiter
    release_w = await asyncio.wait_for(waiter, 1.0)
    late = asyncio.create_task(sched.admit(Job("late", 2.0, predicted_tokens=1), backend))
    await asyncio.sleep(0.05)
    server.connected = True  # Redis returns: the heartbeat adopts "w"'s seat, "late" moves to Redis
    await sched._beat()
    assert sched.connected and sched.running(backend) == 1
    await asyncio.sleep(0.05)
    assert not late.done() and sched.waiting(backend) == 1
    release_w()  # its lease given back in Redis: "late" gets the seat
    release_late = await asyncio.wait_for(late, 1.0)
    release_late()
    await asyncio.sleep(0.05)
    assert sched.running(backend) == 0 and sched.waiting() == 0


async def test_hrrn_is_refused_for_a_shared_queue() -> None:
    pool = BackendPool(["http://b0"], slack_tokens=0.0)
    queue = SharedQueue(fakeredis.FakeAsyncRedis(), "r", 1, 3.0)
    with pytest.raises(ValueError, match="hrrn"):
        SharedScheduler(make_policy("hrrn"), 1, 10, lambda: 0.0, queue, pool, "redis://fake")


# ---- priority mode: in-flight counts -----------------------------------------------------------


async def test_each_replica_sees_the_others_requests_in_flight_until_their_entries_expire() -> None:
    server = fakeredis.FakeServer()
    pools = [BackendPool(["http://b0", "http://b1"], slack_tokens=0.0) for _ in range(3)]
    shared = [SharedInflight(fakeredis.FakeAsyncRedis(server=server, decode_responses=True), f"r{i}", pool)
              for i, pool in enumerate(pools)]
    pools[0].backends[0].inflight, pools[1].backends[0].inflight, pools[1].backends[1].inflight = 2, 3, 1
    for s in shared:
        await s.exchange(100.0)
    await shared[0].exchange(100.1)
    assert [b.peer_inflight for b in pools[0].backends] == [3, 1]
    assert [b.peer_inflight for b in pools[2].backends] == [5, 1]
    await shared[2].exchange(100.0 + EXPIRES_S + 0.5)  # r0 and r1 stopped renewing: killed
    assert [b.peer_inflight for b in pools[2].backends] == [0, 0]
