"""Finding the tables to follow: ``rethinkdb.table_config``, read and followed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rethinkdb import RethinkDB

from ..rethink import close_quietly, close_soon, connect, is_connection_error, keepalive
from ..rethinkdb_url import RethinkDBAddress

logger = logging.getLogger(__name__)

# (database, table, primary_key, appeared_while_watching)
TableAdded = Callable[[str, str, str, bool], None]
TableRemoved = Callable[[str, str], None]
# (database, table): a second table of that name appeared (see table_clashes.py)
TableClashed = Callable[[str, str], None]


class TableDiscovery:
    """Reports the tables that exist, and those created or dropped later.

    ``appeared_while_watching`` is False for the tables found on the very first
    read, and True for every table seen after it (including those found only
    after a reconnect: they were created while we could not see it).

    Tables are told by their ids: a second table of a known name (racing
    creates) is reported to ``clashed``, not ``added``; once the table that
    was added is gone, the name is removed, and added again (as a new table)
    if another table has it.
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        added: TableAdded,
        removed: TableRemoved,
        clashed: TableClashed | None = None,
    ) -> None:
        self.r = r
        self.address = address
        self.added = added
        self.removed = removed
        self.clashed = clashed
        # table id -> (database, name); a name may have several ids for a while
        # (racing creates), and is added once and removed with its last id.
        self.known: dict[str, tuple[str, str]] = {}
        self._primary_keys: dict[str, str] = {}  # table id -> its primary key
        self._reported: dict[tuple[str, str], str] = {}  # name -> the id added() told of
        self._ids: dict[tuple[str, str], set[str]] = {}  # name -> its tables' ids
        self.ready = asyncio.Event()
        self.stopping = False
        self._conn: Any = None

    def stop(self) -> None:
        """Stop following (see ``TableFeed.stop`` for why not just cancel)."""
        self.stopping = True
        close_soon(self._conn)

    async def run(self) -> None:
        delay = 0.1
        first_read = True
        while not self.stopping:
            conn = None
            try:
                conn = self._conn = await connect(self.r, self.address)
                if self.stopping:
                    return
                await self._follow(conn, first_read)
            except Exception as error:
                if self.stopping:
                    return
                if is_connection_error(error):
                    logger.warning("table discovery: RethinkDB unavailable (%s); retrying", error)
                else:
                    # e.g. a user without read access to the system database
                    logger.exception("table discovery failed; retrying")
            finally:
                self._conn = None
                await close_quietly(conn)
            first_read = first_read and not self.ready.is_set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _follow(self, conn: Any, first_read: bool) -> None:
        feed = await (
            self.r.db("rethinkdb")
            .table("table_config")
            .changes(include_initial=True, include_states=True, include_types=True)
            .run(conn)
        )
        seen: set[str] = set()
        pinger = asyncio.ensure_future(keepalive(self.r, conn, "table discovery"))
        try:
            await self._read(feed, first_read, seen)
        finally:
            pinger.cancel()

    async def _read(self, feed: Any, first_read: bool, seen: set[str]) -> None:
        async for item in feed:
            if self.stopping:
                return
            kind = item.get("type")
            if kind == "state":
                if item.get("state") == "ready":
                    for gone in set(self.known) - seen:
                        self._forget(gone)
                    self.ready.set()
                continue
            old, new = item.get("old_val"), item.get("new_val")
            if old and (not new or (old["db"], old["name"]) != (new["db"], new["name"])):
                self._forget(old["id"])
            if new:
                seen.add(new["id"])
                if new["id"] not in self.known:
                    appeared = not (kind == "initial" and first_read)
                    self._learn(new, appeared)

    def _learn(self, row: dict[str, Any], appeared: bool) -> None:
        key = (row["db"], row["name"])
        self.known[row["id"]] = key
        self._primary_keys[row["id"]] = row.get("primary_key", "id")
        self._ids.setdefault(key, set()).add(row["id"])
        if key not in self._reported:
            self._reported[key] = row["id"]
            self.added(*key, self._primary_keys[row["id"]], appeared)
        elif self.clashed is not None:
            # Racing creates, or a table dropped and created again whose
            # removal is reported after the new table (RethinkDB does not
            # order the changes of different rows).
            self.clashed(*key)

    def _forget(self, table_id: str) -> None:
        key = self.known.pop(table_id, None)
        self._primary_keys.pop(table_id, None)
        if key is None:
            return
        others = self._ids[key]
        others.discard(table_id)
        if not others:
            del self._ids[key]
        if self._reported.get(key) != table_id:
            return
        del self._reported[key]
        self.removed(*key)
        # Another table has the name: a new table for whoever follows it.
        if others:
            successor = min(others)
            self._reported[key] = successor
            self.added(*key, self._primary_keys[successor], True)
