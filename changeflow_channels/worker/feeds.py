"""Where a change event is born: one changefeed per table, on a connection shared
with other tables' feeds (``feed_pool.py``) or on its own."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlError, ReqlOpFailedError

from .. import metrics
from ..changes import build_change, change_message, epoch_message
from ..jsonsafe import RawDecoder
from ..rethink import RAW_FORMATS, Connections, Follower, close_cursor, close_cursor_soon
from ..rethinkdb_url import RethinkDBAddress
from .memory_budget import MemoryBudget
from .table_state import TableState

logger = logging.getLogger(__name__)

# What a table must be before its feed (re)opens: its primary replica serving.
FEED_READINESS = "ready_for_writes"

# A changeflow.change (or changeflow.epoch) message -> awaited before the next item is read
ChangeSink = Callable[[dict[str, Any]], Awaitable[None]]


class TableFeed(Follower):
    """Follows one table and hands every change, numbered, to ``sink``.

    Each (re)start of the feed is a new ``epoch``; ``seq`` counts the changes
    of an epoch from 1. Once an epoch's feed is ready (caught up), a
    ``changeflow.epoch`` message goes to ``sink`` too, after the changes read
    before it: subscribers learn of the new epoch at once, not with the next
    change. With ``announce_initial`` (a table that appeared while
    we were watching), the feed opens with ``include_initial`` and announces
    the documents already there as ``add``: the changefeed guarantees nothing
    falls between those and the changes after them, so a push that created
    the table is never lost, whoever created it and however fast.

    ``state`` keeps the recent changes and, for a table of at most
    ``snapshot_limit`` documents, the documents themselves (the feed then
    always opens with ``include_initial`` to load them, announcing them only
    for a new table).

    The reconnect loop, its backoff and ``stop()`` are ``Follower``'s; a table
    gone ends the feed. On a shared connection (``connections``), ``stop()``
    closes the feed's cursor, not the connection.
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        database: str,
        table: str,
        sink: ChangeSink,
        *,
        announce_initial: bool = False,
        primary_key: str = "id",
        history: int = 1000,
        snapshot_limit: int = 1000,
        feed_queue_size: int = 100_000,
        connections: Connections | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        super().__init__(r, address, f"{database}.{table}", connections=connections)
        self.database = database
        self.table = table
        self.sink = sink
        self.announce_initial = announce_initial
        self.state = TableState(primary_key, history, snapshot_limit, budget=budget)
        self.feed_queue_size = feed_queue_size
        self.ready = asyncio.Event()
        self.last_read = 0.0  # loop time of the last item read, for a quiet shutdown
        # This epoch's feed said "ready": its initial values are delivered or loaded.
        self.caught_up_event = asyncio.Event()
        self.metrics = metrics.for_stream(self.stream)
        self._cursor: Any = None  # the changefeed read now

    @property
    def caught_up(self) -> bool:
        return self.caught_up_event.is_set()

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"

    async def run(self) -> None:
        """Follow the table until it is dropped or ``stop()`` is called."""
        await self.follow(self._session, retrying=self._restarting)

    async def _session(self, conn: Any) -> bool:
        """One epoch; True when the table is gone (the feed ends)."""
        try:
            await self._follow(conn)
        except ReqlOpFailedError as error:
            if self.stopping:
                return True
            if not await self._table_exists(conn):
                logger.info("%s: table gone, feed ended (%s)", self.stream, error.message)
                return True
            logger.warning("%s: feed aborted (%s); restarting", self.stream, error.message)
        return False

    def _restarting(self) -> None:
        self.metrics.restarts.inc()
        if self.caught_up:
            # Changes made while the feed was down cannot be replayed by
            # RethinkDB: the next epoch tells subscribers to start afresh.
            self.announce_initial = False

    async def _follow(self, conn: Any) -> None:
        r = self.r
        table = r.db(self.database).table(self.table)
        # A table just created may not be ready: its feed would never say "ready".
        # Not wait()'s default (all replicas ready): with one replica's server down,
        # that waits until it is back, while a new primary serves the table (and
        # its changefeed) within seconds. A table that takes writes has a primary.
        await self.query(table.wait(wait_for=FEED_READINESS).run(conn))
        limit = self.state.snapshot_limit
        # Only "at most limit?" matters: counting stops after limit + 1 documents.
        mirrored = limit > 0 and await self.query(table.limit(limit + 1).count().run(conn)) <= limit
        cursor = self._cursor = await self.query(
            table.changes(
                include_initial=mirrored or self.announce_initial,
                include_states=True,
                include_types=True,
                changefeed_queue_size=self.feed_queue_size,
            ).run(conn, **RAW_FORMATS, json_decoder=RawDecoder)
        )
        try:
            self.state.reset(uuid.uuid4().hex, mirrored=mirrored)
            self.caught_up_event.clear()
            logger.info("following %s (epoch %s)", self.stream, self.state.epoch)
            await self.kept_alive(conn, self._read(cursor))
        finally:
            # On a shared connection the feed would go on at the server.
            self._cursor = None
            await close_cursor(cursor)

    def wake(self) -> None:
        """Stopping: the cursor ends once what it holds is read (everything read is
        delivered); a shared connection stays open for the other feeds."""
        if self._cursor is not None and self.connections.shared:
            close_cursor_soon(self._cursor)

    async def _read(self, cursor: Any) -> None:
        # Everything read is delivered, even while stopping: stop() closes the
        # connection, which is what ends this loop.
        now = asyncio.get_running_loop().time
        async for item in cursor:
            self.last_read = now()
            kind = item.get("type")
            if kind == "state":
                if item.get("state") == "ready":
                    self.progressed()  # a restart after this one waits the least
                    self.caught_up_event.set()
                    self.ready.set()
                    await self._announce_epoch()
                continue
            if "error" in item:
                # RethinkDB skipped changes (its queue overflowed): subscribers
                # and our documents are no longer exact. Restart: a new epoch.
                logger.error("%s: %s; restarting the feed", self.stream, item["error"])
                return
            if kind == "initial" and not self.announce_initial:
                self.state.load(item["new_val"])  # JSON-safe: RawDecoder
                continue
            change = build_change(item, initial_as_add=self.announce_initial)
            state = self.state
            assert state.epoch is not None  # set by _follow before reading
            message = change_message(self.database, self.table, change, state.epoch, state.seq + 1)
            self.metrics.read(message)
            state.record(message)
            await self.sink(message)

    async def _announce_epoch(self) -> None:
        """Tell every subscriber at once that this epoch began (``changeflow.epoch``),
        after the changes read before it: a write made while the feed was down is
        never left for the next change to reveal."""
        state = self.state
        assert state.epoch is not None  # set by _follow before reading
        await self.sink(
            epoch_message(
                self.database,
                self.table,
                state.epoch,
                state.seq,
                since_creation=self.announce_initial,
            )
        )

    async def _table_exists(self, conn: Any) -> bool:
        try:
            if conn is None or not conn.is_open():
                return True  # cannot tell; retrying is the safe answer
            return self.table in await self.r.db(self.database).table_list().run(conn)
        except ReqlOpFailedError:
            return False
        except ReqlError:  # the connection lost meanwhile: cannot tell
            return True
