"""Answers to senders: a push's result, a sync request's changes or snapshot."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.exceptions import ChannelFull

logger = logging.getLogger(__name__)

# Tries (with backoff, about 5 s in all) to answer on a full reply channel.
REPLY_ATTEMPTS = 10


async def send_reply(channel_layer: Any, channel: str, answer: dict[str, Any]) -> None:
    """Send ``answer`` on ``channel``; a failure is logged, never raised.

    A reply channel can be full for a moment (a Daphne process's consumers share
    one in channels_redis, and a burst fills it): the send is tried for a while."""
    delay = 0.05
    for attempt in range(REPLY_ATTEMPTS):
        try:
            await channel_layer.send(channel, answer)
            return
        except ChannelFull:
            if attempt + 1 < REPLY_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        except Exception as error:  # the answer's boundary: logged, never raised
            # (the layer down, mostly: the sender's own timeout tells it)
            logger.warning("could not answer on %s: %r", channel, error)
            return
    logger.warning("could not answer on %s: the channel stayed full", channel)
