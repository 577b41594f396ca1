"""Per-table leases and the worker registry, in Redis.

Key layout, under ``<layer prefix>:changeflow:<CHANGEFLOW_CHANNEL>`` (one set of
workers shares one namespace):

- ``...:lease:<db.table>``: the id of the worker following that table; set with
  ``SET NX PX`` and renewed or released only by its holder (compare-and-set scripts).
- ``...:workers``: a sorted set of worker ids scored by when their heartbeat
  expires (Redis's own clock); stale entries are pruned by every heartbeat.
- ``...:worker:<id>``: the worker's published state (JSON), expiring with it.

Every call is bounded by ``timeout`` (a Redis that does not answer must not
hold up the fencing of leases). Pure Redis operations, no policy: see
``table_sharing.py`` for who takes what.

Replicas (``CHANGEFLOW_LEASE_REPLICAS``): Redis replicates asynchronously, so a
failover (Sentinel promoting a replica) loses the writes the replica had not
received yet: a lease taken then is gone on the new master, another worker takes
it, and two workers follow one table. With ``replicas`` > 0 a lease counts as
taken, and a renewal as extending it, only once that many replicas acknowledged it
(``WAIT``, on the same connection, within half the call's bound); a lease taken
without the acknowledgements is given back at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis

from ..redis_layer import changeflow_redis_host

T = TypeVar("T")
logger = logging.getLogger(__name__)

# ARGV: worker id, ttl ms, info JSON. KEYS: workers zset, info key. Returns live ids.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# ARGV: worker id, ttl ms. KEYS: leases. Returns 1 per key still ours (and extended).
_RENEW = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""
# ARGV: worker id. KEYS: leases. Deletes only the ones still ours.
_RELEASE = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"""
# Live workers (heartbeat not expired by Redis's clock). KEYS: workers zset.
_LIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
"""


def positive_seconds(value: Any, name: str) -> float:
    """``value`` as seconds; ``ValueError`` naming the setting unless it is a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Renewal:
    """What a renewal did: the streams whose lease is still ours (and was extended), and
    whether the replicas it needs acknowledged the extension."""

    renewed: set[str]
    acknowledged: bool


@dataclass
class RedisTarget:
    """Where the leases live: a Redis client and the key namespace."""

    redis: Redis
    namespace: str
    description: str  # for logs and ``changeflow status`` (no password)


def redis_target(
    layer_alias: str, redis_url: str | dict[str, Any] | None, channel: str
) -> RedisTarget | None:
    """The Redis of the leases (``changeflow_redis_host``: CHANGEFLOW_REDIS, else the
    channel layer's first host) under the layer's prefix, with a pool whose every new
    connection to a Sentinel host asks the Sentinels for the master; None without a
    Redis: no leases, one worker."""
    from channels_redis.utils import create_pool
    from django.conf import settings

    host = changeflow_redis_host(layer_alias, redis_url)
    if host is None:
        return None
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(layer_alias, {})
    prefix = config.get("CONFIG", {}).get("prefix", "asgi")
    namespace = f"{prefix}:changeflow:{channel}"
    return RedisTarget(Redis(connection_pool=create_pool(host)), namespace, _describe(host))


def _describe(host: dict[str, Any]) -> str:
    if "address" in host:
        address = str(host["address"])
        scheme, sep, rest = address.partition("://")
        if sep and "@" in rest:  # hide credentials
            rest = rest.rsplit("@", 1)[1]
        return f"{scheme}{sep}{rest}"
    if "master_name" in host:
        return f"sentinel master {host['master_name']}"
    return f"{host.get('host', 'localhost')}:{host.get('port', 6379)}"


class LeaseStore:
    """One worker's handle on the leases and the registry."""

    def __init__(
        self,
        target: RedisTarget,
        worker_id: str,
        lease_time: float,
        timeout: float,
        replicas: int = 0,
    ) -> None:
        self.redis = target.redis
        self.namespace = target.namespace
        self.description = target.description
        self.worker_id = worker_id
        self.lease_ms = max(1, int(lease_time * 1000))
        self.timeout = timeout
        self.replicas = replicas  # acknowledgements a lease's writes need (see the module doc)
        self.wait_ms = max(1, int(timeout * 500))
        self._heartbeat = self.redis.register_script(_HEARTBEAT)
        self._renew = self.redis.register_script(_RENEW)
        self._release = self.redis.register_script(_RELEASE)

    def lease_key(self, stream: str) -> str:
        return f"{self.namespace}:lease:{stream}"

    @property
    def workers_key(self) -> str:
        return f"{self.namespace}:workers"

    def info_key(self, worker_id: str) -> str:
        return f"{self.namespace}:worker:{worker_id}"

    async def _bounded(self, call: Awaitable[T]) -> T:
        return await asyncio.wait_for(call, self.timeout)

    async def heartbeat(self, info: dict[str, Any]) -> list[str]:
        """Say we are alive (with ``info`` for ``changeflow status``); the live worker ids."""
        keys = [self.workers_key, self.info_key(self.worker_id)]
        args: list[str | int] = [self.worker_id, self.lease_ms, json.dumps(info)]
        live = await self._bounded(self._heartbeat(keys=keys, args=args))
        return [_text(worker) for worker in live]

    async def acquire(self, stream: str) -> bool:
        """Take the lease of a table nobody holds (acknowledged by ``replicas`` replicas)."""
        key = self.lease_key(stream)
        if not self.replicas:
            return bool(
                await self._bounded(self.redis.set(key, self.worker_id, nx=True, px=self.lease_ms))
            )
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, self.worker_id, nx=True, px=self.lease_ms)
        pipe.wait(self.replicas, self.wait_ms)
        taken, acknowledged = await self._bounded(pipe.execute())
        if taken and int(acknowledged) < self.replicas:
            logger.warning(
                "%s: lease not counted on, acknowledged by %d of %d replica(s): given back",
                stream,
                int(acknowledged),
                self.replicas,
            )
            await self.release([stream])
            return False
        return bool(taken)

    async def renew(self, streams: Iterable[str]) -> Renewal:
        """Extend the leases still ours: the streams whose lease was renewed, and whether
        ``replicas`` replicas acknowledged it (if not, a failover may undo the renewal)."""
        streams = list(streams)
        if not streams:
            return Renewal(set(), True)
        keys = [self.lease_key(s) for s in streams]
        args: list[str | int] = [self.worker_id, self.lease_ms]
        acknowledged = True
        if self.replicas:
            pipe = self.redis.pipeline(transaction=False)
            pipe.eval(_RENEW, len(keys), *keys, *args)  # the script's text: one connection
            pipe.wait(self.replicas, self.wait_ms)
            flags, replicas = await self._bounded(pipe.execute())
            acknowledged = int(replicas) >= self.replicas
        else:
            flags = await self._bounded(self._renew(keys=keys, args=args))
        renewed = {stream for stream, flag in zip(streams, flags, strict=True) if int(flag)}
        return Renewal(renewed, acknowledged)

    async def release(self, streams: Iterable[str]) -> int:
        """Give up leases (only those still ours)."""
        keys = [self.lease_key(s) for s in streams]
        if not keys:
            return 0
        return int(await self._bounded(self._release(keys=keys, args=[self.worker_id])))

    async def holders(self, streams: Iterable[str]) -> dict[str, str | None]:
        """Who holds each table's lease (None: nobody)."""
        streams = list(streams)
        if not streams:
            return {}
        values = await self._bounded(self.redis.mget([self.lease_key(s) for s in streams]))
        return {s: None if v is None else _text(v) for s, v in zip(streams, values, strict=True)}

    async def published(self, worker_id: str) -> dict[str, Any] | None:
        """What a live worker published with its last heartbeat (None: gone)."""
        raw = await self._bounded(self.redis.get(self.info_key(worker_id)))
        return None if raw is None else json.loads(raw)

    async def unregister(self) -> None:
        """Leave the registry (clean shutdown)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.workers_key, self.worker_id)
        pipe.delete(self.info_key(self.worker_id))
        await self._bounded(pipe.execute())

    async def close(self) -> None:
        await self._bounded(self.redis.aclose(close_connection_pool=True))


async def read_registry(target: RedisTarget) -> dict[str, Any]:
    """Everything ``changeflow status`` shows from Redis: the live workers' published
    state and every lease with its holder and remaining time (ms)."""
    redis = target.redis
    live = [_text(w) for w in await redis.eval(_LIVE, 1, f"{target.namespace}:workers")]
    infos = await redis.mget([f"{target.namespace}:worker:{w}" for w in live]) if live else []
    workers = {}
    for worker_id, raw in zip(live, infos, strict=True):
        if raw is not None:
            workers[worker_id] = json.loads(raw)
    leases: dict[str, dict[str, Any]] = {}
    prefix = f"{target.namespace}:lease:"
    async for key in redis.scan_iter(match=prefix + "*", count=500):
        name = _text(key)
        pipe = redis.pipeline(transaction=False)
        pipe.get(name)
        pipe.pttl(name)
        holder, ttl = await pipe.execute()
        if holder is not None:
            leases[name[len(prefix) :]] = {"holder": _text(holder), "ttl_ms": int(ttl)}
    return {"workers": workers, "leases": leases}
