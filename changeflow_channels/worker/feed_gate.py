"""The gate in front of every push: no write lands before a feed is ready to announce it.

A write into a watched table that no ready feed follows would never reach the
subscribers: a table the push itself creates (its feed opens after the table
appears), a table not followed yet, a feed restarting. So before each write the
push path asks ``FeedGate.open``:

- a table that is not watched, or whose feed here is caught up: go at once (the
  common case costs a dictionary lookup);
- otherwise a missing table is created first (its feed must open before its
  first write), then the gate waits until a feed on it is caught up: this
  worker's, or, with several workers, the feed of the worker holding the table's
  lease, as that worker published it in Redis (``Ownership.announced_elsewhere``);
- not by ``give_up``: the push is answered ``unavailable`` (``FEED_NOT_READY``),
  never written unannounced.

A feed that restarts after the gate let a write through starts a new epoch,
which its subscribers are told about at once (``changeflow.epoch``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..tables.ddl import table_exists

if TYPE_CHECKING:
    from rethinkdb import RethinkDB

    from ..tables.ddl import TableRegistry
    from .ownership import Ownership
    from .table_feeds import TableFeeds
    from .watch import WatchPatterns

# How often a waiting push looks again: this worker's feeds, and what the holder published.
LOCAL_POLL = 0.02
REMOTE_POLL = 0.1
# A holder's feed seen ready is taken as ready this long without asking Redis again (what it
# publishes is up to a lease tick old anyway; a feed restarted meanwhile announces its new
# epoch to the subscribers).
REMOTE_FRESH = 1.0
# A waiting push with no feed on its table here asks this often whether the table is
# still there (created again when not).
RECHECK = 0.5

logger = logging.getLogger(__name__)

FEED_NOT_READY = "no feed on the table is ready to announce the write, push not written"


class AlwaysOpen:
    """No gate (a writer used on its own, without feeds)."""

    async def open(self, conn: Any, database: str, table: str, give_up: float) -> bool:
        return True


class FeedGate:
    """Lets a write into ``database.table`` go once a ready feed will announce it."""

    def __init__(
        self,
        r: RethinkDB,
        patterns: WatchPatterns,
        following: TableFeeds,
        ownership: Ownership,
        tables: TableRegistry,
    ) -> None:
        self.r = r
        self.patterns = patterns
        self.following = following
        self.ownership = ownership
        self.tables = tables
        self._remote_ready: dict[str, float] = {}  # stream -> monotonic time it was seen ready

    async def open(self, conn: Any, database: str, table: str, give_up: float) -> bool:
        """True once the write may go; False when no feed was ready by ``give_up``
        (a ``time.monotonic()``). Creates a missing table (on ``conn``) first.
        RethinkDB's errors are the caller's (a lost connection is retried there)."""
        stream = f"{database}.{table}"
        if not self.patterns.matches(database, table) or self._ready_here(database, table):
            return True
        known = stream in self.following.watched  # discovered: the table exists
        seen = self._remote_ready.get(stream) if known else self._remote_ready.pop(stream, None)
        if known and seen is not None and time.monotonic() - seen < REMOTE_FRESH:
            return True
        checked = time.monotonic()
        if not known and not await table_exists(self.r, conn, database, table):
            await self.tables.ensure(conn, database, table)
        while True:
            if self._ready_here(database, table):
                return True
            if self.following.feed(stream) is None and time.monotonic() - checked > RECHECK:
                # No feed here: the table may have been dropped since it was known (its
                # feed ended), and no feed opens on a table that is not there.
                checked = time.monotonic()
                if not await table_exists(self.r, conn, database, table):
                    await self.tables.ensure(conn, database, table)
            remote = not self.ownership.holds(stream)
            if remote and await self.ownership.announced_elsewhere(stream):
                if seen is None:
                    logger.debug("%s: the push goes: another worker's feed is ready", stream)
                self._remote_ready[stream] = time.monotonic()
                return True
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(REMOTE_POLL if remote else LOCAL_POLL, remaining))

    def _ready_here(self, database: str, table: str) -> bool:
        feed = self.following.feed(f"{database}.{table}")
        return feed is not None and feed.caught_up
