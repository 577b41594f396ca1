"""Two tables with one name: the worker repairs the clashes discovery reports.

The repair itself (``repair_table``: keep the table with the smallest id, copy
the documents of the others into it, drop them) is in ``tables/ddl.py``, which
also runs it after creating a table.
"""

from __future__ import annotations

import asyncio
import logging

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from ..rethink import Reconnecting
from ..tables.ddl import repair_table

logger = logging.getLogger(__name__)

# A repair that fails (a table still being created) is tried again, waiting up
# to this long between tries.
RETRY_UNTIL = 5.0


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
