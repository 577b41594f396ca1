"""Answers to senders: a push's result, a sync request's changes or snapshot."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.exceptions import ChannelFull

from ..redis_layer import REDIS_ERRORS

logger = logging.getLogger(__name__)

# Tries (with backoff, about 5 s in all) to answer on a full reply channel.
REPLY_ATTEMPTS = 10
# How long an answer is tried while the channel layer is down (Redis restarting):
# it is delivered once the layer is back, if its reply channel is still read.
REPLY_PATIENCE = 30.0
MAX_DELAY = 1.0


class _Outage:
    """Since when the channel layer refuses answers: one outage, one deadline, so that
    the answers waiting in it hold the worker up ``patience`` seconds in all, not each."""

    since: float | None = None


_outage = _Outage()


async def send_reply(
    channel_layer: Any, channel: str, answer: dict[str, Any], *, patience: float = REPLY_PATIENCE
) -> bool:
    """Send ``answer`` on ``channel``; whether it was sent. A failure is logged,
    never raised.

    A reply channel can be full for a moment (a Daphne process's consumers share
    one in channels_redis, and a burst fills it): the send is tried
    ``REPLY_ATTEMPTS`` times. While the channel layer is unreachable, it is tried
    until the layer has been unreachable for ``patience`` seconds, with backoff."""
    delay = 0.05
    full = 0
    while True:
        try:
            await channel_layer.send(channel, answer)
            _outage.since = None
            return True
        except ChannelFull:
            full += 1
            if full >= REPLY_ATTEMPTS:
                logger.warning("could not answer on %s: the channel stayed full", channel)
                return False
        except REDIS_ERRORS as error:  # the layer down: tried again until it is back
            now = time.monotonic()
            if _outage.since is None:
                _outage.since = now
            if now + delay > _outage.since + patience:
                logger.warning(
                    "could not answer on %s: the channel layer stayed unavailable for %g s (%r)",
                    channel,
                    patience,
                    error,
                )
                return False
            logger.info("could not answer on %s yet (%r); trying again", channel, error)
        except Exception as error:  # the answer's boundary: logged, never raised
            logger.warning("could not answer on %s: %r", channel, error)
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)
