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
from collections.abc import Awaitable, Callable
from typing import Any

POP_TIMEOUT = 0.5  # seconds; must stay below the worker's RECEIVE_GRACE

Pop = Callable[[str], Awaitable[dict[str, Any] | None]]


def exclusive_pop(channel_layer: Any) -> Pop | None:
    """``pop(channel)``: the next message of a channel shared by processes, or None
    after ``POP_TIMEOUT``; None (no such function) when the layer is not
    channels_redis's ``RedisChannelLayer`` (its own ``receive`` is fine then)."""
    needed = ("prefix", "ring_size", "connection", "deserialize", "require_valid_channel_name")
    if type(channel_layer).__name__ != "RedisChannelLayer" or not all(
        hasattr(channel_layer, name) for name in needed
    ):
        return None
    hosts = itertools.cycle(range(channel_layer.ring_size))

    async def pop(channel: str) -> dict[str, Any] | None:
        assert "!" not in channel, "only for channels shared by processes"
        assert channel_layer.require_valid_channel_name(channel, receive=True)
        connection = channel_layer.connection(next(hosts))
        popped = await connection.bzpopmin(channel_layer.prefix + channel, timeout=POP_TIMEOUT)
        if popped is None:
            return None
        _, member, _ = popped
        return channel_layer.deserialize(member)

    return pop
