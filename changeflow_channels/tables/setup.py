"""The worker's start-up work on ``CHANGEFLOW_TABLES``: tables, keys and indexes.

Runs in the background: a RethinkDB that is down at start-up is retried with
backoff, and the worker stays up meanwhile. ``created`` is set once every
configured table and index exists (table discovery starts then), ``ready``
once the indexes are built (autoclean starts then).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlError

from ..rethink import Follower, is_connection_error
from ..rethinkdb_url import RethinkDBAddress
from .config import TableConfig, TablesConfig
from .ddl import create_indexes, create_table, wait_indexes

logger = logging.getLogger(__name__)


class TableSetup(Follower):
    """Creates the configured tables and their missing indexes, then waits for the indexes.

    A lost connection is retried with ``Follower``'s backoff, on with what is left to do."""

    def __init__(self, r: RethinkDB, address: RethinkDBAddress, configs: TablesConfig) -> None:
        super().__init__(r, address, "setting up CHANGEFLOW_TABLES")
        self.configs = configs
        self.created = asyncio.Event()
        self.ready = asyncio.Event()
        self._to_create: list[TableConfig] = []
        self._to_wait: list[tuple[TableConfig, list[str]]] = []

    async def wait_created(self) -> bool:
        """True once the tables exist; False if stopped first."""
        return await self.until(self.created)

    async def wait_ready(self) -> bool:
        """True once the indexes are built; False if stopped first."""
        return await self.until(self.ready)

    async def run(self) -> None:
        self._to_create = list(self.configs.values())
        self._to_wait = []
        if self._to_create:
            await self.follow(self._session)
        else:
            self.created.set()
            self.ready.set()

    async def _session(self, conn: Any) -> bool:
        """What is left to do, on one connection; True once all is done."""
        to_create, to_wait = self._to_create, self._to_wait
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
        return True

    async def _create(self, conn: Any, config: TableConfig) -> list[str] | None:
        """Create one table and its missing indexes; a refusal (not a lost connection) is
        logged and the table skipped."""
        try:
            await create_table(
                self.r,
                conn,
                config.database,
                config.table,
                config.primary_key,
                replicas=config.replicas,
                shards=config.shards,
            )
            return await create_indexes(self.r, conn, config)
        except ReqlError as error:
            if is_connection_error(error, conn):
                raise
            logger.error("cannot set up table %s: %s", config.stream, error)
            return None

    async def _wait(self, conn: Any, config: TableConfig, names: list[str]) -> None:
        try:
            await wait_indexes(self.r, conn, config, names)
            logger.info("table %s ready: indexes %s", config.stream, ", ".join(names))
        except ReqlError as error:
            if is_connection_error(error, conn):
                raise
            logger.error("waiting for the indexes of %s failed: %s", config.stream, error)
