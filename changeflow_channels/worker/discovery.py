"""Finding the tables to follow: ``rethinkdb.table_config``, read and followed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rethinkdb import RethinkDB

from ..rethink import Follower
from ..rethinkdb_url import RethinkDBAddress
from ..tables.ddl import SPARE_SUFFIX

logger = logging.getLogger(__name__)

# (database, table, primary_key, appeared_while_watching)
TableAdded = Callable[[str, str, str, bool], None]
TableRemoved = Callable[[str, str], None]
# (database, table): a second table of that name appeared (see table_clashes.py)
TableClashed = Callable[[str, str], None]


class TableDiscovery(Follower):
    """Reports the tables that exist, and those created or dropped later.

    ``appeared_while_watching`` is False for the tables found on the very first
    read, and True for every table seen after it (including those found only
    after a reconnect: they were created while we could not see it).

    Tables are told by their ids: a second table of a known name (racing
    creates) is reported to ``clashed``, not ``added``; once the table that
    was added is gone, the name is removed, and added again (as a new table)
    if another table has it.

    A reconnect reads the table list again (``Follower``): the tables dropped
    meanwhile are removed, those created meanwhile added.

    An extra table that a repair renamed (``SPARE_SUFFIX``) is not followed: it
    lives only while its documents are copied into the table kept.
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        added: TableAdded,
        removed: TableRemoved,
        clashed: TableClashed | None = None,
    ) -> None:
        super().__init__(r, address, "table discovery")
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

    async def run(self) -> None:
        await self.follow(self._session)

    async def _session(self, conn: Any) -> bool:
        """The table list and its changes, until the connection ends (never done)."""
        feed = await (
            self.r.db("rethinkdb")
            .table("table_config")
            .changes(include_initial=True, include_states=True, include_types=True)
            .run(conn)
        )
        # The tables of the first read were there before us; those of a read
        # after a reconnect appeared while we were watching (or could not see).
        first_read = not self.ready.is_set()
        await self.kept_alive(conn, self._read(feed, first_read, set()))
        return False

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
            if new and SPARE_SUFFIX not in new["name"]:
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
