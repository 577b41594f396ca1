"""``CHANGEFLOW_TOKEN_CONNECTIONS``: at most that many websockets open at once per token,
and per user among token connections, across every Daphne process.

With channels_redis's layer (changeflow's ``RedisChannelLayer`` included) the open
connections are counted in Redis, in the layer's namespace: a sorted set per token
and per user, one member per connection whose score is when it lapses. A connection
adds itself when it opens (one script: both sets are checked and added to at once,
so concurrent openings cannot pass the cap together), renews its entry every
``RENEW_EVERY`` seconds, and removes it when it closes. The entry of a Daphne that
died without closing lapses after ``LEASE`` seconds. With another layer (the
in-memory one: one process) they are counted in the process.

Browser (session) connections are not capped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from channels.layers import get_channel_layer

from ..conf import get_settings
from ..redis_layer import REDIS_ERRORS
from .refusal import CLOSE_TOO_MANY, CLOSE_UNAVAILABLE, Refusal

logger = logging.getLogger(__name__)

LEASE = 60.0  # seconds an entry lasts without renewal
RENEW_EVERY = 20.0

# KEYS: the token's set, the user's set. ARGV: member, lease, limit.
# Returns 0 when added, else the 1-based index of the key that is full.
ADMIT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, ARGV[1]) == false
     and redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', key, math.ceil(tonumber(ARGV[2])) + 1)
end
return 0
"""
RELEASE = """
for _, key in ipairs(KEYS) do redis.call('ZREM', key, ARGV[1]) end
return 0
"""

_local: Counter[str] = Counter()  # without Redis: open connections per key, in this process


def _keys(token: str, user_id: str) -> list[str]:
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    return [f"changeflow.conns.token.{digest}", f"changeflow.conns.user.{user_id}"]


def _redis(layer: Any, keys: list[str]) -> tuple[Any, list[str]] | None:
    """A Redis client of the layer and the keys in its namespace, or None (no Redis)."""
    from channels_redis.core import RedisChannelLayer

    if not isinstance(layer, RedisChannelLayer):
        return None
    index = layer.consistent_hash(keys[1])  # one host for a user's keys
    return layer.connection(index), [layer.prefix + key for key in keys]


async def _admit(keys: list[str], member: str, limit: int) -> int:
    redis = _redis(get_channel_layer(), keys)
    if redis is None:
        for index, key in enumerate(keys, 1):
            if _local[key] >= limit:
                return index
        _local.update(keys)
        return 0
    client, full_keys = redis
    return int(await client.eval(ADMIT, len(full_keys), *full_keys, member, LEASE, limit))


async def _release(keys: list[str], member: str) -> None:
    redis = _redis(get_channel_layer(), keys)
    if redis is None:
        _local.subtract(keys)
        for key in keys:
            if _local[key] <= 0:
                del _local[key]
        return
    client, full_keys = redis
    await client.eval(RELEASE, len(full_keys), *full_keys, member)


async def _renew_forever(keys: list[str], member: str, limit: int) -> None:
    while True:
        await asyncio.sleep(RENEW_EVERY)
        try:
            await _admit(keys, member, limit)  # an existing member is renewed, never refused
        except REDIS_ERRORS as error:
            logger.warning("renewing a token connection's entry failed: %r", error)


@contextlib.asynccontextmanager
async def held_connection(token: str, user_id: str) -> AsyncIterator[Refusal | None]:
    """Counts this connection against the token's and the user's caps while the block
    runs; yields None, or the ``Refusal`` of a connection over a cap (not counted)."""
    limit = get_settings().token_connections
    keys, member = _keys(token, user_id), uuid.uuid4().hex
    try:
        full = await _admit(keys, member, limit)
    except REDIS_ERRORS as error:
        logger.warning("counting a token connection failed: %r", error)
        yield Refusal(CLOSE_UNAVAILABLE, "unavailable", "the server cannot take connections now")
        return
    if full:
        whose = "this token" if full == 1 else "this user's tokens"
        message = f"{whose} already have {limit} connections open (CHANGEFLOW_TOKEN_CONNECTIONS)"
        yield Refusal(CLOSE_TOO_MANY, "rate_limited", message)
        return
    renewing = asyncio.ensure_future(_renew_forever(keys, member, limit))
    try:
        yield None
    finally:
        renewing.cancel()
        try:
            await _release(keys, member)
        except REDIS_ERRORS as error:  # the entry lapses after LEASE seconds
            logger.warning("releasing a token connection's entry failed: %r", error)
