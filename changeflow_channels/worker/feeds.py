"""Where a change event is born: one changefeed per table, on its own connection."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from .. import metrics
from ..changes import build_change, change_message
from ..jsonsafe import RawDecoder, json_safe
from ..rethink import (
    RAW_FORMATS,
    close_quietly,
    close_soon,
    connect,
    is_connection_error,
    keepalive,
)
from ..rethinkdb_url import RethinkDBAddress
from .table_state import TableState

logger = logging.getLogger(__name__)

# A changeflow.change message -> awaited before the next change is read
ChangeSink = Callable[[dict[str, Any]], Awaitable[None]]
MAX_BACKOFF = 5.0


class TableFeed:
    """Follows one table and hands every change, numbered, to ``sink``.

    Each (re)start of the feed is a new ``epoch``; ``seq`` counts the changes
    of an epoch from 1. With ``announce_initial`` (a table that appeared while
    we were watching), the feed opens with ``include_initial`` and announces
    the documents already there as ``add``: the changefeed guarantees nothing
    falls between those and the changes after them, so a push that created
    the table is never lost, whoever created it and however fast.

    ``state`` keeps the recent changes and, for a table of at most
    ``snapshot_limit`` documents, the documents themselves (the feed then
    always opens with ``include_initial`` to load them, announcing them only
    for a new table).
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
    ) -> None:
        self.r = r
        self.address = address
        self.database = database
        self.table = table
        self.sink = sink
        self.announce_initial = announce_initial
        self.state = TableState(primary_key, history, snapshot_limit)
        self.ready = asyncio.Event()
        self.stopping = False
        self.last_read = 0.0  # loop time of the last item read, for a quiet shutdown
        # This epoch's feed said "ready": its initial values are delivered or loaded.
        self.caught_up_event = asyncio.Event()
        self._conn: Any = None
        self.metrics = metrics.for_stream(self.stream)

    @property
    def caught_up(self) -> bool:
        return self.caught_up_event.is_set()

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"

    def stop(self) -> None:
        """Stop following: closing the connection ends the cursor's wait.

        Cancelling the task alone is not enough: on Python 3.11 a cancellation
        can be lost inside ``asyncio.wait_for`` and the feed would go on."""
        self.stopping = True
        close_soon(self._conn)

    async def run(self) -> None:
        """Follow the table until it is dropped or ``stop()`` is called."""
        delay = 0.1
        while not self.stopping:
            conn = None
            try:
                conn = self._conn = await connect(self.r, self.address)
                if not self.stopping:
                    await self._follow(conn)
            except ReqlOpFailedError as error:
                if self.stopping:
                    return
                if not await self._table_exists(conn):
                    logger.info("%s: table gone, feed ended (%s)", self.stream, error.message)
                    return
                logger.warning("%s: feed aborted (%s); restarting", self.stream, error.message)
            except Exception as error:
                if self.stopping:
                    return
                if is_connection_error(error):
                    logger.warning(
                        "%s: RethinkDB connection lost (%s); reconnecting", self.stream, error
                    )
                else:
                    logger.exception("%s: feed failed; restarting it", self.stream)
            finally:
                self._conn = None
                await close_quietly(conn)
            if not self.stopping:
                self.metrics.restarts.inc()
            if self.caught_up:
                # Changes made while the feed was down cannot be replayed by
                # RethinkDB: the next epoch tells subscribers to start afresh.
                self.announce_initial = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def _follow(self, conn: Any) -> None:
        r = self.r
        table = r.db(self.database).table(self.table)
        # A table just created may not be ready: its feed would never say "ready".
        await table.wait().run(conn)
        limit = self.state.snapshot_limit
        mirrored = limit > 0 and await table.count().run(conn) <= limit
        cursor = await table.changes(
            include_initial=mirrored or self.announce_initial,
            include_states=True,
            include_types=True,
        ).run(conn, **RAW_FORMATS, json_decoder=RawDecoder)
        self.state.reset(uuid.uuid4().hex, mirrored=mirrored)
        self.caught_up_event.clear()
        logger.info("following %s (epoch %s)", self.stream, self.state.epoch)
        pinger = asyncio.ensure_future(keepalive(r, conn, self.stream))
        try:
            await self._read(cursor)
        finally:
            pinger.cancel()

    async def _read(self, cursor: Any) -> None:
        # Everything read is delivered, even while stopping: stop() closes the
        # connection, which is what ends this loop.
        now = asyncio.get_running_loop().time
        async for item in cursor:
            self.last_read = now()
            kind = item.get("type")
            if kind == "state":
                if item.get("state") == "ready":
                    self.caught_up_event.set()
                    self.ready.set()
                continue
            if "error" in item:
                # RethinkDB skipped changes (its queue overflowed): subscribers
                # and our documents are no longer exact. Restart: a new epoch.
                logger.error("%s: %s; restarting the feed", self.stream, item["error"])
                return
            if kind == "initial" and not self.announce_initial:
                self.state.load(json_safe(item["new_val"]))
                continue
            change = build_change(item, initial_as_add=self.announce_initial)
            state = self.state
            assert state.epoch is not None  # set by _follow before reading
            message = change_message(self.database, self.table, change, state.epoch, state.seq + 1)
            self.metrics.read(message)
            state.record(message)
            await self.sink(message)

    async def _table_exists(self, conn: Any) -> bool:
        try:
            if conn is None or not conn.is_open():
                return True  # cannot tell; retrying is the safe answer
            return self.table in await self.r.db(self.database).table_list().run(conn)
        except ReqlOpFailedError:
            return False
        except Exception:
            return True
