"""One waiting queue and one set of seats per backend, shared by every gateway replica through Redis.

Per backend (keys under `lengthwise:{<backend id>}:`):

    queue      sorted set: member → the policy key (lower first; equal keys by member, which
               starts with the arrival time, so ties go by arrival as in `WaitingQueue`)
    switches   sorted set: member → the instant its key changes (a max-wait bound: the policy
               is `piecewise_constant`), and `next` hash: member → the key from then on
    seats      sorted set: member → its lease's expiry; live leases are the requests running

A member is `<arrival>|<replica>|<backend id>|<request id>#<try>`. Every change runs one Lua
script, which ends by *pumping*: drop expired leases, re-key members whose switch instant
has passed, then while a seat is free pop the best member and lease it a seat. A member
whose replica is gone (its `replica:<id>` key expired) is dropped instead: a killed
replica's clients are gone too. The caller gets its own members granted in the reply;
other replicas' are pushed onto their `grants:<id>` lists, which they block on.

Times are the replicas' shared clock (`SHARED_EPOCH`), passed in by the caller: the scripts
never read Redis's own clock, so a key, a switch instant and a lease expiry are all on one
scale. Standalone Redis only (the scripts touch the replica and grant keys they compute).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: The replicas' shared clock counts seconds from here (2026-01-01 UTC): wall-clock time, which
#: NTP keeps within milliseconds across hosts, small enough that keys built on arrival times
#: (aging's rate, the deadline's overdue key) keep their precision.
SHARED_EPOCH = 1_767_225_600.0
PREFIX = "lengthwise:"

_PUMP = """
local queue, switches, nexts, seats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, capacity, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local caller, prefix = ARGV[4], ARGV[5]
local function pump()
  redis.call('ZREMRANGEBYSCORE', seats, '-inf', now)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', switches, '-inf', now)) do
    local key = redis.call('HGET', nexts, m)
    if key then redis.call('ZADD', queue, 'XX', key, m) end
    redis.call('HDEL', nexts, m)
    redis.call('ZREM', switches, m)
  end
  local mine = {}
  while redis.call('ZCARD', seats) < capacity do
    local top = redis.call('ZPOPMIN', queue)
    if #top == 0 then break end
    local m = top[1]
    redis.call('ZREM', switches, m)
    redis.call('HDEL', nexts, m)
    local owner = string.match(m, '^[^|]*|([^|]*)|')
    if owner and redis.call('EXISTS', prefix .. 'replica:' .. owner) == 1 then
      redis.call('ZADD', seats, now + lease, m)
      if owner == caller then
        mine[#mine + 1] = m
      else
        local grants = prefix .. 'grants:' .. owner
        redis.call('RPUSH', grants, m)
        redis.call('PEXPIRE', grants, math.ceil(lease * 1000))
      end
    end
  end
  return {mine, redis.call('ZCARD', seats), redis.call('ZCARD', queue)}
end
"""

#: ARGV[6] member, ARGV[7] key, ARGV[8] switch instant ('' for none), ARGV[9] key after it.
ENQUEUE = _PUMP + """
redis.call('ZADD', queue, ARGV[7], ARGV[6])
if ARGV[8] ~= '' then
  redis.call('ZADD', switches, ARGV[8], ARGV[6])
  redis.call('HSET', nexts, ARGV[6], ARGV[9])
end
local out = pump()
out[4] = 1
return out
"""

#: ARGV[6] member: out of the queue if it still waits, else its seat given back.
LEAVE = _PUMP + """
local m = ARGV[6]
redis.call('ZREM', switches, m)
redis.call('HDEL', nexts, m)
if redis.call('ZREM', queue, m) == 0 then redis.call('ZREM', seats, m) end
local out = pump()
out[4] = 1
return out
"""

#: ARGV[6..] the members this replica runs on the backend: their leases renewed (re-created if
#: Redis lost them), the replica marked alive; out[4] says whether it was alive before.
HEARTBEAT = _PUMP + """
local alive = prefix .. 'replica:' .. caller
local was = redis.call('EXISTS', alive)
redis.call('SET', alive, '1', 'PX', math.ceil(lease * 1000))
for i = 6, #ARGV do redis.call('ZADD', seats, now + lease, ARGV[i]) end
local out = pump()
out[4] = was
return out
"""


@dataclass(frozen=True)
class Seats:
    """A script's reply: this replica's members granted a seat, and the backend as it left it."""

    granted: list[str]
    running: int
    waiting: int
    #: HEARTBEAT: whether Redis still knew this replica (False: it restarted or the replica was silent too long).
    known: bool = True


def connect(url: str, timeout_s: float) -> Redis:
    """A client that fails fast (one quick retry, for a pooled connection Redis closed) so that
    an outage turns into the local fallback within `timeout_s`, not after backoffs."""
    return Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s,
                          retry=Retry(NoBackoff(), 1), decode_responses=True, health_check_interval=0)


def backend_id(url: str) -> str:
    """A backend's id in Redis: the same for every replica that names it by the same URL, and free
    of any credentials the URL carries."""
    return hashlib.sha1(url.encode()).hexdigest()[:12]


def member(arrival: float, replica: str, backend: str, request: str) -> str:
    """A queue member; it starts with the arrival time (fixed width), so equal keys go by arrival."""
    return f"{max(arrival, 0.0):020.6f}|{replica}|{backend}|{request}"


def member_backend(name: str) -> str:
    return name.split("|", 3)[2]


class SharedQueue:
    """The Redis side of queue mode across replicas: each call is one atomic script; see the module docstring."""

    def __init__(self, redis: Redis, replica: str, seats: int, lease_s: float) -> None:
        if seats < 1 or not lease_s > 0:
            raise ValueError(f"shared queue: need seats >= 1 and lease_s > 0, got {seats}, {lease_s}")
        self.redis, self.replica, self.seats, self.lease_s = redis, replica, seats, lease_s
        self._enqueue = redis.register_script(ENQUEUE)
        self._leave = redis.register_script(LEAVE)
        self._heartbeat = redis.register_script(HEARTBEAT)
        self._grants = f"{PREFIX}grants:{replica}"

    def _keys(self, backend: str) -> list[str]:
        base = f"{PREFIX}{{{backend}}}:"  # one hash tag per backend
        return [base + "queue", base + "switches", base + "next", base + "seats"]

    def _argv(self, now: float) -> list[str]:
        return [repr(now), str(self.seats), repr(self.lease_s), self.replica, PREFIX]

    async def enqueue(self, backend: str, name: str, key: float, now: float,
                      switch_at: float | None = None, next_key: float | None = None) -> Seats:
        """Queue `name` with `key` (becoming `next_key` at `switch_at`), then pump."""
        switch = "" if switch_at is None else repr(switch_at)
        after = "" if next_key is None else repr(next_key)
        return _seats(await self._enqueue(self._keys(backend), [*self._argv(now), name, repr(key), switch, after]))

    async def leave(self, backend: str, name: str, now: float) -> Seats:
        """`name` leaves: out of the queue, or its seat given back; then pump."""
        return _seats(await self._leave(self._keys(backend), [*self._argv(now), name]))

    async def heartbeat(self, held: dict[str, list[str]], now: float) -> dict[str, Seats]:
        """Mark this replica alive, renew the leases of `held` (backend id → members), pump every backend."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for backend, names in held.items():
                await self._heartbeat(self._keys(backend), [*self._argv(now), *names], client=pipe)
            replies = await pipe.execute()
        return {backend: _seats(reply) for backend, reply in zip(held, replies, strict=True)}

    async def next_grant(self, timeout_s: float) -> str | None:
        """The next of this replica's members another replica's pump granted; None after `timeout_s`."""
        reply = await self.redis.blpop([self._grants], timeout=timeout_s)
        return None if reply is None else reply[1]


def _seats(reply: list) -> Seats:
    granted, running, waiting, known = reply
    return Seats(list(granted), int(running), int(waiting), bool(known))
