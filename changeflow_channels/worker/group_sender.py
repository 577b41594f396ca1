"""``group_send`` in one Redis round trip instead of four, for channels_redis's core layer.

``RedisChannelLayer.group_send`` makes four round trips per message (expire the
group's old members, read the members, expire each channel's old messages, then
a script that adds the message where there is room). Measured here, every round
trip costs about as much as the message itself, and the worker keeps one send in
flight per table, so they set its pace. ``GroupSender`` does the same work in one
script, atomically, with the members it saw last time: the script checks that
the group still has exactly those members and, when not, sends nothing and
returns the current ones, and the message is made again for them. Capacity,
expiry, the message per channel key (``__asgi_channel__``), the random prefix and
encryption are channels_redis's own (``_map_channel_keys_to_connection``).

Used only for a single-host ``RedisChannelLayer`` whose ``group_send`` is not
overridden; any other layer gets its own ``group_send``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple

import msgpack

from ..redis_layer import internals_known

logger = logging.getLogger(__name__)

# KEYS[1]: the group; KEYS[2..]: the channel keys of the members the caller knows.
# ARGV: group cutoff, message cutoff, now, expiry, m (member count), the m members,
# then one message and one capacity per channel key.
# Returns {channels over capacity, most messages already waiting in one of the
# channels}, or (members changed) {-1, the members...}.
GROUP_SEND_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local m = tonumber(ARGV[5])
local stale = #members ~= m
if not stale then
    local known = {}
    for i = 1, m do
        known[ARGV[5 + i]] = true
    end
    for _, name in ipairs(members) do
        if not known[name] then
            stale = true
            break
        end
    end
end
if stale then
    table.insert(members, 1, -1)
    return members
end
local n = #KEYS - 1
local over = 0
local backlog = 0
for i = 1, n do
    local key = KEYS[i + 1]
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[2])
    local waiting = redis.call('ZCOUNT', key, '-inf', '+inf')
    if waiting > backlog then
        backlog = waiting
    end
    if waiting < tonumber(ARGV[5 + m + n + i]) then
        redis.call('ZADD', key, ARGV[3], ARGV[5 + m + i])
        redis.call('EXPIRE', key, ARGV[4])
    else
        over = over + 1
    end
end
return {over, backlog}
"""

# Members changing between reads of the group, again and again: channels_redis's own path.
ATTEMPTS = 5


def fast_path_supported(layer: Any) -> bool:
    """A single-host channels_redis ``RedisChannelLayer`` with its own ``group_send``, of a
    release whose internals are known (``redis_layer.internals_known``)."""
    try:
        from channels_redis.core import RedisChannelLayer
    except ImportError:  # pragma: no cover - channels_redis is a dependency
        return False
    return (
        internals_known()
        and isinstance(layer, RedisChannelLayer)
        and type(layer).group_send is RedisChannelLayer.group_send
        and getattr(layer, "ring_size", None) == 1
        and all(
            hasattr(layer, name)
            for name in ("_group_key", "_map_channel_keys_to_connection", "connection")
        )
    )


class MessageTooLarge(Exception):
    """The message would exceed the byte bound; nothing was sent."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


class Sent(NamedTuple):
    """What ``GroupSender.send`` learnt: the size in bytes of the message as stored
    (the largest per channel key; 0 when not known or the group is empty), the
    most messages that were already waiting in one member channel (0 when not
    known), and how many member channels were full (the message was dropped for
    their consumers: channels_redis's capacity; 0 when not known)."""

    size: int
    backlog: int
    over: int = 0


class GroupSender:
    """``group_send(group, message)`` for one channel layer, in one round trip when it can."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.fast = fast_path_supported(layer)
        self._members: dict[str, list[str]] = {}  # group -> members seen last time

    async def send(self, group: str, message: dict[str, Any], max_bytes: int | None = None) -> Sent:
        """Send ``message`` to ``group``; raises ``MessageTooLarge`` (sending nothing)
        when ``max_bytes`` is given and the message is larger."""
        if not self.fast:
            size = 0
            if max_bytes is not None:
                size = len(msgpack.packb(message))  # channels_redis's serialization
                if size > max_bytes:
                    raise MessageTooLarge(size)
            await self.layer.group_send(group, message)
            return Sent(size, 0)
        layer = self.layer
        assert layer.require_valid_group_name(group), "Group name not valid"
        connection = layer.connection(0)
        group_key = layer._group_key(group)
        members = self._members.get(group, [])
        for _ in range(ATTEMPTS):
            keys_by_connection, messages, capacities = layer._map_channel_keys_to_connection(
                members, message
            )
            keys = keys_by_connection.get(0, [])
            size = max((len(messages[key]) for key in keys), default=0)
            if max_bytes is not None and size > max_bytes:
                raise MessageTooLarge(size)
            now = time.time()
            reply = await connection.eval(
                GROUP_SEND_LUA,
                1 + len(keys),
                group_key,
                *keys,
                int(now) - layer.group_expiry,
                int(now) - int(layer.expiry),
                now,
                int(layer.expiry),
                len(members),
                *members,
                *(messages[key] for key in keys),
                *(capacities[key] for key in keys),
            )
            if reply[0] != -1:
                over, backlog = reply
                if over > 0:
                    logger.info(
                        "%d of %d channels over capacity in group %s", over, len(members), group
                    )
                return Sent(size, backlog, over)
            members = [name.decode("utf8") for name in reply[1:]]
            self._members[group] = members
        logger.info("members of %s keep changing; sending through channels_redis", group)
        await layer.group_send(group, message)
        return Sent(size, 0)
