"""Receiving from a channel that several worker processes read at once.

channels_redis (4.x) keeps what ``receive()`` pops in a backup queue named after
the channel, and every ``receive()`` first moves that whole queue back into the
channel. With one reader that protects against a cancelled receive; with
several processes reading one channel, a message another process has just
taken is put back and handed out a second time (a push written twice). Here
the message is popped atomically (``BZPOPMIN``) with no backup queue: each
message goes to exactly one worker. The pop waits at most ``POP_TIMEOUT``, so
a receive is never cancelled while it may be taking a message (see
``ChangeflowWorker._receive_unless_stopping``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("changeflow_channels")

POP_TIMEOUT = 0.5  # seconds; must stay below the worker's RECEIVE_GRACE

Pop = Callable[[str, int], Awaitable[list[dict[str, Any] | None]]]


def exclusive_pop(channel_layer: Any) -> Pop | None:
    """``pop(channel, limit)``: up to ``limit`` messages of a channel shared by
    processes, oldest first (an empty list after ``POP_TIMEOUT`` without any);
    None (no such function) when the layer is not channels_redis's
    ``RedisChannelLayer`` (its own ``receive`` is fine then).

    Under load one round trip takes everything waiting (``ZPOPMIN`` with a
    count, as atomic as ``BZPOPMIN``: each message still goes to one worker);
    when the channel is empty it waits with ``BZPOPMIN``, then takes the rest.
    """
    needed = ("prefix", "ring_size", "connection", "deserialize", "require_valid_channel_name")
    from channels_redis.core import RedisChannelLayer

    # A subclass keeps the storage (a sorted set per channel): it is popped the same way.
    if not isinstance(channel_layer, RedisChannelLayer) or not all(
        hasattr(channel_layer, name) for name in needed
    ):
        return None
    hosts = itertools.cycle(range(channel_layer.ring_size))

    async def pop(channel: str, limit: int = 1) -> list[dict[str, Any] | None]:
        assert "!" not in channel, "only for channels shared by processes"
        assert channel_layer.require_valid_channel_name(channel, receive=True)
        assert limit >= 1
        connection = channel_layer.connection(next(hosts))
        key = channel_layer.prefix + channel
        members = [member for member, _ in await connection.zpopmin(key, limit)]
        if not members:
            popped = await connection.bzpopmin(key, timeout=POP_TIMEOUT)
            if popped is None:
                return []
            members.append(popped[1])
            if limit > 1:
                members.extend(member for member, _ in await connection.zpopmin(key, limit - 1))
        return [load(member) for member in members]

    def load(member: bytes) -> dict[str, Any] | None:
        # One undecodable message must not cost the others popped with it.
        try:
            return channel_layer.deserialize(member)
        except Exception as error:
            logger.error("dropped an undecodable message: %r", error)
            return None

    return pop
