"""The worker's start-up work on ``CHANGEFLOW_TABLES``: tables, keys and indexes.

Runs in the background: a RethinkDB that is down at start-up is retried with
backoff, and the worker stays up meanwhile. ``created`` is set once every
configured table and index exists (table discovery starts then), ``ready``
once the indexes are built (autoclean starts then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from rethinkdb import RethinkDB

from ..rethink import close_quietly, close_soon, connect, is_connection_error
from ..rethinkdb_url import RethinkDBAddress
from .config import TableConfig, TablesConfig
from .ddl import create_indexes, create_table, wait_indexes

logger = logging.getLogger(__name__)

MAX_DELAY = 5.0


class TableSetup:
    """Creates the configured tables and their missing indexes, then waits for the indexes."""

    def __init__(self, r: RethinkDB, address: RethinkDBAddress, configs: TablesConfig) -> None:
        self.r = r
        self.address = address
        self.configs = configs
        self.created = asyncio.Event()
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self._conn: Any = None

    def stop(self) -> None:
        """Stop (closing the connection wakes a query in flight)."""
        self.stopped.set()
        close_soon(self._conn)

    async def wait_created(self) -> bool:
        """True once the tables exist; False if stopped first."""
        return await _first(self.created, self.stopped)

    async def wait_ready(self) -> bool:
        """True once the indexes are built; False if stopped first."""
        return await _first(self.ready, self.stopped)

    async def run(self) -> None:
        to_create = list(self.configs.values())
        to_wait: list[tuple[TableConfig, list[str]]] = []
        delay = 0.1
        while not self.stopped.is_set():
            conn = None
            try:
                if to_create:
                    conn = self._conn = await connect(self.r, self.address)
                while to_create:
                    names = await self._create(conn, to_create[0])
                    if names:
                        to_wait.append((to_create[0], names))
                    to_create.pop(0)
                self.created.set()
                while to_wait:
                    await self._wait(conn, *to_wait[0])
                    to_wait.pop(0)
                self.ready.set()
                return
            except Exception as error:
                if self.stopped.is_set():
                    return
                logger.warning(
                    "setting up CHANGEFLOW_TABLES: RethinkDB unavailable (%s); retrying in %.1f s",
                    error,
                    delay,
                )
            finally:
                self._conn = None
                await close_quietly(conn)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), delay)
            delay = min(delay * 2, MAX_DELAY)

    async def _create(self, conn: Any, config: TableConfig) -> list[str] | None:
        """Create one table and its missing indexes; a refusal (not a lost connection) is
        logged and the table skipped."""
        try:
            await create_table(self.r, conn, config.database, config.table, config.primary_key)
            return await create_indexes(self.r, conn, config)
        except Exception as error:
            if is_connection_error(error):
                raise
            logger.error("cannot set up table %s: %s", config.stream, error)
            return None

    async def _wait(self, conn: Any, config: TableConfig, names: list[str]) -> None:
        try:
            await wait_indexes(self.r, conn, config, names)
            logger.info("table %s ready: indexes %s", config.stream, ", ".join(names))
        except Exception as error:
            if is_connection_error(error):
                raise
            logger.error("waiting for the indexes of %s failed: %s", config.stream, error)


async def _first(wanted: asyncio.Event, stopped: asyncio.Event) -> bool:
    if not wanted.is_set() and not stopped.is_set():
        waits = [asyncio.ensure_future(wanted.wait()), asyncio.ensure_future(stopped.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
    return wanted.is_set()
