"""The watched tables and the feeds this worker runs for them (one ``TableFeed`` each,
on the connections they share, ``feed_pool.py``, within the memory budget of all
their histories and mirrors, ``memory_budget.py``).

Which watched tables are followed is not decided here: ``ownership.py`` starts and
stops the feeds (every watched table with one worker, the tables whose lease it
holds with several).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rethinkdb import RethinkDB

from ..changes import EPOCH_TYPE
from ..rethinkdb_url import RethinkDBAddress
from .feed_pool import SharedConnections
from .feeds import ChangeSink, TableFeed
from .memory_budget import MemoryBudget

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


class TableFeeds:
    """Watched tables (``db.table`` -> database, table, primary key) and their feeds.

    ``feeds`` maps each followed table to its feed and the feed's task. With
    ``fenced`` (several workers), a feed delivers only while it is the table's
    current feed: one dropped (its lease lost) delivers nothing more, even what
    it read before its connection closed; once it announced a new epoch (caught
    up), ``on_epoch(stream)`` is called (other workers' pushes may wait for it).
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        delivery: Any,
        *,
        history: int,
        snapshot_limit: int,
        feed_queue_size: int = 100_000,
        fenced: bool,
        connections: int | None = None,
        memory_budget: int | None = None,
    ) -> None:
        self.r = r
        self.address = address
        self.delivery = delivery
        self.history = history
        self.snapshot_limit = snapshot_limit
        self.feed_queue_size = feed_queue_size
        self.fenced = fenced
        # None: each feed on a connection of its own (rethink.OwnConnections), as before.
        self.connections = (
            SharedConnections(r, address, connections) if connections is not None else None
        )
        self.budget = MemoryBudget(memory_budget)
        self.watched: dict[str, tuple[str, str, str]] = {}
        self.feeds: dict[str, tuple[TableFeed, asyncio.Task[None]]] = {}
        self.on_epoch: Callable[[str], None] = lambda stream: None

    def watch(self, database: str, table: str, primary_key: str) -> str:
        """``database.table`` is watched (not followed yet); its stream name."""
        stream = f"{database}.{table}"
        self.watched[stream] = (database, table, primary_key)
        return stream

    def unwatch(self, stream: str) -> None:
        self.watched.pop(stream, None)

    def feed(self, stream: str) -> TableFeed | None:
        entry = self.feeds.get(stream)
        return entry[0] if entry is not None else None

    # -- FeedControl (table_sharing.py, ownership.py) -----------------------------

    def start_feed(self, stream: str, announce_initial: bool) -> None:
        """Follow a watched table (a new ``TableFeed``: a new epoch)."""
        if stream in self.feeds or stream not in self.watched:
            return
        database, table, primary_key = self.watched[stream]
        feed = TableFeed(
            self.r,
            self.address,
            database,
            table,
            self._guarded_sink(stream) if self.fenced else self.delivery,
            announce_initial=announce_initial,
            primary_key=primary_key,
            history=self.history,
            snapshot_limit=self.snapshot_limit,
            feed_queue_size=self.feed_queue_size,
            connections=self.connections,
            budget=self.budget,
        )
        task = asyncio.ensure_future(feed.run())
        task.add_done_callback(lambda done: self._feed_done(stream, feed, done))
        self.feeds[stream] = (feed, task)

    def _guarded_sink(self, stream: str) -> ChangeSink:
        async def sink(message: dict[str, Any]) -> None:
            entry = self.feeds.get(stream)
            if entry is not None and entry[0].state.epoch == message["epoch"]:
                await self.delivery(message)
                if message["type"] == EPOCH_TYPE:
                    self.on_epoch(stream)

        return sink

    async def stop_feed(self, stream: str) -> None:
        """Stop following ``stream``; return once the changes it read were sent."""
        entry = self.feeds.get(stream)
        if entry is None:
            return
        entry[0].stop()
        await asyncio.wait([entry[1]], timeout=STOP_TIMEOUT)
        self.feeds.pop(stream, None)
        await self.delivery.drain_stream(stream)
        logger.info("stopped following %s", stream)

    def drop_feed(self, stream: str, why: str = "lease lost") -> None:
        """Stop following ``stream`` at once (its lease is lost, its table dropped)."""
        entry = self.feeds.pop(stream, None)
        if entry is not None:
            entry[0].stop()
            logger.info("stopped following %s (%s)", stream, why)

    def is_following(self, stream: str) -> bool:
        return stream in self.feeds

    def published_state(self) -> dict[str, Any]:
        """The followed tables' positions and lag, for ``changeflow status``."""
        now = asyncio.get_running_loop().time()
        tables = {}
        for stream, (feed, _) in self.feeds.items():
            tables[stream] = {
                "epoch": feed.state.epoch,
                "seq": feed.state.seq,
                "caught_up": feed.caught_up,
                "pending": self.delivery.pending(stream),
                "last_read_ago": round(now - feed.last_read, 3) if feed.last_read else None,
            }
        return tables

    # -- shutdown -----------------------------------------------------------------

    def stop_all(self) -> list[asyncio.Task[None]]:
        """Ask every feed to stop; their tasks (to wait for, then ``clear``)."""
        for feed, _ in self.feeds.values():
            feed.stop()
        return [task for _, task in self.feeds.values()]

    def clear(self) -> None:
        self.feeds.clear()

    async def close(self) -> None:
        """Close the feeds' connections (once the feeds are stopped)."""
        if self.connections is not None:
            await self.connections.close()

    def _feed_done(self, stream: str, feed: TableFeed, task: asyncio.Task[None]) -> None:
        feed.state.forget()  # its memory no longer counts against the budget
        entry = self.feeds.get(stream)
        if entry is not None and entry[1] is task:
            del self.feeds[stream]
        if not task.cancelled() and task.exception() is not None:
            logger.error("feed of %s crashed", stream, exc_info=task.exception())
