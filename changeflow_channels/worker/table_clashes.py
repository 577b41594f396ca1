"""Two tables with one name: RethinkDB lets racing ``table_create`` calls make both.

Every query on such a name then fails ("Table `db.t` is ambiguous"), for the
worker and for everybody else. RethinkDB's advice is to keep one and drop the
others through ``rethinkdb.table_config``. Whoever repairs (any worker, any
number at once) keeps the same table, the one with the smallest id; the
documents of the others are copied into it before they are dropped, so a
write that landed in a table about to go is not lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from .connection import Reconnecting

logger = logging.getLogger(__name__)

# A repair that fails (a table still being created) is tried again, waiting up
# to this long between tries.
RETRY_UNTIL = 5.0

# An extra table is renamed to this (plus its id) while its documents are copied.
SPARE_SUFFIX = "_changeflow_spare_"


async def table_ids(r: RethinkDB, conn: Any, database: str, table: str) -> list[str]:
    """The ids of the tables named ``database.table``, smallest first."""
    rows = await (
        r.db("rethinkdb")
        .table("table_config")
        .filter({"db": database, "name": table})
        .pluck("id")
        .coerce_to("array")
        .run(conn)
    )
    return sorted(row["id"] for row in rows)


async def repair_table(r: RethinkDB, conn: Any, database: str, table: str) -> bool:
    """Leave one table named ``database.table``; True if there were several."""
    ids = await table_ids(r, conn, database, table)
    if len(ids) < 2:
        return False
    keep, extras = ids[0], ids[1:]
    logger.warning(
        "%d tables are named %s.%s (created at the same moment by several clients): "
        "keeping %s, moving the documents of the others into it and dropping them",
        len(ids),
        database,
        table,
        keep,
    )
    configs = r.db("rethinkdb").table("table_config")
    # Tables still being created cannot be renamed or dropped yet.
    await r.db(database).wait().run(conn)
    spares = {extra: f"{table}{SPARE_SUFFIX}{extra.replace('-', '')}" for extra in extras}
    for extra, spare in spares.items():
        # A name of its own makes the kept table the only one with the name.
        _check(await configs.get(extra).update({"name": spare}).run(conn))
    kept = r.db(database).table(table)
    await kept.wait().run(conn)
    for extra, spare in spares.items():
        try:
            source = r.db(database).table(spare)
            await source.wait().run(conn)
            # An equal document kept already is no conflict; a different one keeps the kept one.
            await kept.insert(source, conflict=lambda _key, old, _new: old).run(conn)
        except ReqlOpFailedError:
            # Another worker repairing at the same moment dropped it already.
            logger.info("%s.%s: table %s already gone", database, table, extra)
        _check(await configs.get(extra).delete().run(conn))
    return True


class RepairFailed(ReqlOpFailedError):
    """RethinkDB refused to rename or drop an extra table (the message says why)."""


def _check(result: dict[str, Any]) -> None:
    # A system table's write reports its failure in the result, not as an exception.
    if result.get("errors"):
        raise RepairFailed(result.get("first_error", "write failed"))


class ClashRepairs:
    """The worker's repairs of the clashes discovery reports: one per name at a time."""

    def __init__(self, r: RethinkDB, connection: Reconnecting) -> None:
        self.r = r
        self.connection = connection
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._running.values())

    def start(self, database: str, table: str) -> None:
        """Repair ``database.table`` in the background (a TableDiscovery callback)."""
        key = (database, table)
        if key in self._running:
            return  # the repair under way sees every table of the name
        task = asyncio.ensure_future(self._repair(database, table))
        self._running[key] = task
        task.add_done_callback(lambda done: self._done(key, done))

    async def _repair(self, database: str, table: str) -> None:
        delay = 0.1
        while True:
            try:
                conn = await self.connection.get()
                await repair_table(self.r, conn, database, table)
                return
            except ReqlOpFailedError as error:
                if delay > RETRY_UNTIL:
                    raise
                logger.info("%s.%s: repair failed (%s); trying again", database, table, error)
            await asyncio.sleep(delay)
            delay *= 2

    def _done(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self._running.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error("repair of %s.%s failed", *key, exc_info=task.exception())
