"""Receiving from the channel layer without dying when the layer fails.

redis-py 8 gives every connection a 5 s ``socket_timeout``; channels_redis's
blocking ``receive()`` then raises ``redis.exceptions.TimeoutError`` after five
idle seconds (channels_redis #422). With a plain ``CHANNEL_LAYERS`` config that
would kill an idle worker and close every idle websocket with 1011. Here an
idle timeout just means "receive again", and a real outage (Redis restarted)
is retried with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger("changeflow_channels")

MAX_BACKOFF = 5.0
# A group nobody is in: discarding from it is the cheapest command that needs Redis.
PROBE_GROUP = "changeflow-probe"


def _is_idle_timeout(error: BaseException) -> bool:
    return type(error).__name__ == "TimeoutError" and type(error).__module__.startswith("redis")


async def receive_forever(
    channel_layer: Any,
    channel: str,
    recovered: dict[str, Any] | None = None,
    receive: Callable[[str], Awaitable[Any]] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """``channel_layer.receive(channel)``, retried until a message arrives.

    ``receive``: used instead of the layer's (what it returns is returned).
    ``should_stop``: asked after each failed receive (which took nothing): when
    true, None is returned instead of retrying, so a stopping worker is not held
    by a channel layer that is down.

    With ``recovered``: after an outage, that message is returned as soon as the
    layer answers again (a cheap probe), so the caller can rejoin its groups,
    which a restarted Redis has forgotten.
    """
    delay = 0.1
    failed = False
    while True:
        try:
            if failed and recovered is not None:
                await channel_layer.group_discard(PROBE_GROUP, channel)
                logger.warning("channel layer back for %s", channel)
                return dict(recovered)
            return await (receive or channel_layer.receive)(channel)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if _is_idle_timeout(error):
                continue
            failed = True
            if should_stop is not None and should_stop():
                return None
            logger.warning(
                "channel layer receive on %s failed (%r); retrying in %.1f s", channel, error, delay
            )
            await asyncio.sleep(delay)
            if should_stop is not None and should_stop():
                return None
            delay = min(delay * 2, MAX_BACKOFF)
