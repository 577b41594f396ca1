"""What a sync answer may hold up at once, so that cheap requests cannot make Redis or
the worker hold their answers' bytes many times over (issue 15, item 4).

- ``StreamTurns``: at most ``per_stream`` answers of one stream are sent at a time
  (computed, they wait without a turn of ``catchup.SYNC_CONCURRENCY``): one stream's
  storm of requests is sent out no faster than two answers at once.
- ``Pacer``: an answer's next page goes to a Daphne process's reply channel only when
  fewer than ``PAGES_AHEAD`` pages sent to that process are still waiting in Redis (its
  consumers read them into the process: a page waits in Redis only while that process
  is busy). Redis holds a few pages per Daphne process, not whole answers; the worker holds the answers it is
  sending, cut into pages once, whose documents and changes are shared with its mirror
  and history (no copies).

The Pacer reads the channel's set the way channels_redis stores it (a sorted set per
process, scored by send time), only for the channels_redis releases whose internals are known
(``redis_layer.internals_known``); with any other layer it does not pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from ..redis_layer import REDIS_ERRORS, internals_known

logger = logging.getLogger(__name__)

# Answers of one stream computed and sent at once.
SYNC_PER_STREAM = 2
# Pages sent to a Daphne process that may still wait in Redis when the next is sent.
PAGES_AHEAD = 4
# How often a full channel is looked at again, and how long a page waits for room
# (past that it goes anyway: ``send_reply`` then finds the channel full or not).
PACE_EVERY = 0.01
PACE_PATIENCE = 5.0
# Pages older than this are gone anyway (channels_redis's expiry, 60 s).
PACE_FORGET = 60.0
# Daphne processes whose pages are remembered (beyond: forgotten all at once).
MAX_PROCESSES = 1000


class StreamTurns:
    """At most ``per_stream`` holders per stream at once (``async with turns(stream)``)."""

    def __init__(self, per_stream: int = SYNC_PER_STREAM) -> None:
        self.per_stream = per_stream
        self._turns: dict[str, tuple[asyncio.Semaphore, int]] = {}  # stream: (turns, users)

    @contextlib.asynccontextmanager
    async def __call__(self, stream: str) -> AsyncIterator[None]:
        turns, users = self._turns.get(stream, (asyncio.Semaphore(self.per_stream), 0))
        self._turns[stream] = (turns, users + 1)
        try:
            async with turns:
                yield
        finally:
            turns, users = self._turns[stream]
            if users <= 1:
                del self._turns[stream]  # nobody waits: forgotten (tables come and go)
            else:
                self._turns[stream] = (turns, users - 1)

    def waiting(self, stream: str) -> int:
        """Holders and waiters of ``stream`` (for tests)."""
        return self._turns.get(stream, (None, 0))[1]


class Pacer:
    """Waits until a reply channel has room for one more page (see the module's doc).

    channels_redis keeps one sorted set per Daphne process, scored by the time each
    message was sent, and the process takes them oldest first. The pages sent to a
    process are remembered by the time their send returned (their score is no later);
    while ``ahead`` of them may still be waiting, the next page waits until the oldest
    one is taken: nothing sent up to its time is left in the set. Other messages (live
    changes to a busy process's thousand consumers) do not hold a page up once they are
    newer than the pages sent before it."""

    def __init__(
        self, layer: Any, ahead: int = PAGES_AHEAD, patience: float = PACE_PATIENCE
    ) -> None:
        self.layer = layer
        self.ahead = ahead
        self.patience = patience
        self.enabled = (
            layer is not None
            and internals_known()
            and all(hasattr(layer, name) for name in ("non_local_name", "consistent_hash"))
        )
        # Per process set: when the pages sent to it and maybe not taken yet were sent.
        self._sent: dict[str, deque[float]] = {}

    def _key(self, channel: str) -> str:
        name = self.layer.non_local_name(channel) if "!" in channel else channel
        return f"{self.layer.prefix}{name}"

    async def left_since(self, channel: str, sent_at: float) -> int | None:
        """Messages of ``channel``'s process set sent at ``sent_at`` or before, not taken
        yet (None: not known)."""
        layer = self.layer
        try:
            connection = layer.connection(layer.consistent_hash(channel))
            count: int = await connection.zcount(self._key(channel), "-inf", sent_at)
        except REDIS_ERRORS as error:  # the send that follows finds out and reports
            logger.debug("backlog of %s not known: %r", channel, error)
            return None
        return count

    async def room(self, channel: str) -> None:
        """Until fewer than ``ahead`` pages sent to ``channel``'s process may be waiting
        (at most ``patience`` seconds)."""
        if not self.enabled:
            return
        sent = self._sent.get(self._key(channel))
        if sent is None:
            return
        now = time.time()
        while sent and sent[0] < now - PACE_FORGET:  # expired by channels_redis anyway
            sent.popleft()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience
        while len(sent) >= self.ahead and loop.time() < give_up:
            left = await self.left_since(channel, sent[0])
            if left is None:
                return
            if left == 0:
                sent.popleft()  # taken (and all sent before it)
                continue
            await asyncio.sleep(PACE_EVERY)
        while len(sent) >= self.ahead:  # no room in time: the page goes anyway
            sent.popleft()

    def sent(self, channel: str) -> None:
        """A page was sent to ``channel`` (its send returned)."""
        if not self.enabled:
            return
        key = self._key(channel)
        if key not in self._sent and len(self._sent) >= MAX_PROCESSES:
            self._sent.clear()  # Daphne processes come and go: forget them all, rarely
        self._sent.setdefault(key, deque()).append(time.time())

    def waiting(self, channel: str) -> int:
        """Pages sent to ``channel``'s process and maybe not taken (for tests)."""
        return len(self._sent.get(self._key(channel), ()))
