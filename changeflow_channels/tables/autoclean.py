"""Autoclean: deleting the documents past a table's retention (``CHANGEFLOW_TABLES``).

``{"field": "created", "max_age": 86400}`` deletes the documents whose ``created``
is more than a day old. The field may hold ReQL times (``r.now()``, compared with
the server's ``r.now() - max_age``) or epoch seconds (numbers, compared with this
machine's ``time.time() - max_age``); documents without the field, or with
anything else in it, are kept.

``{"field": "created", "max_rows": 1000}`` keeps the 1000 documents with the
greatest ``created`` (any ReQL-comparable values) and deletes the rest.

Deletes run in batches of ``BATCH`` documents per query until nothing is left.
When ``field`` is a configured simple index that exists on the table, the
queries use it (``between``/``order_by`` with ``index=``); otherwise they scan
the table (``filter``, or an in-memory ``order_by``: RethinkDB's array limit,
100,000 documents by default, applies: configure an index for large tables).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlError, ReqlOpFailedError

from ..rethink import Follower, is_connection_error
from ..rethinkdb_url import RethinkDBAddress
from .config import Retention, TableConfig, TablesConfig
from .ddl import table_exists

logger = logging.getLogger(__name__)

BATCH = 1000
# The earliest time RethinkDB accepts (1400-01-01T00:00:00Z) and the lowest number:
# the lower bounds of the indexed ranges of times and of numbers.
MIN_TIME_EPOCH = -17987443200
MIN_NUMBER = -sys.float_info.max


class CleanError(Exception):
    """RethinkDB refused to delete some documents."""


@dataclass
class CleanResult:
    """What one table's clean did: ``deleted`` documents, or ``missing`` table, or ``error``."""

    stream: str
    deleted: int = 0
    indexed: bool = False
    missing: bool = False
    error: str | None = None

    def describe(self, retention: Retention) -> str:
        rule = (
            f"older than {retention.max_age:g} s"
            if retention.max_age is not None
            else f"beyond the newest {retention.max_rows}"
        )
        how = "by index" if self.indexed else "by scan"
        if self.error is not None:
            return f"{self.stream}: failed: {self.error}"
        if self.missing:
            return f"{self.stream}: no such table, nothing to clean"
        return f"{self.stream}: deleted {self.deleted} ({rule} by `{retention.field}`, {how})"


def with_retention(configs: TablesConfig) -> list[TableConfig]:
    """The configured tables that have a retention."""
    return [config for config in configs.values() if config.retention is not None]


async def clean_table(
    r: RethinkDB, conn: Any, config: TableConfig, batch: int = BATCH
) -> CleanResult:
    """Delete the expired documents of one table. Lost connections raise; other
    errors are reported in the result."""
    retention = config.retention
    assert retention is not None
    result = CleanResult(config.stream)
    table = r.db(config.database).table(config.table)
    try:
        if config.simple_index(retention.field) is not None:
            result.indexed = retention.field in await table.index_list().run(conn)
        for selection in _expired(r, table, retention, result.indexed):
            result.deleted += await _delete_in_batches(selection, conn, batch)
    except ReqlError as error:
        if is_connection_error(error, conn):
            raise
        if isinstance(error, ReqlOpFailedError) and not await table_exists(
            r, conn, config.database, config.table
        ):
            result.missing = True
        else:
            result.error = getattr(error, "message", None) or str(error)
    except CleanError as error:
        result.error = str(error)
    return result


async def clean_tables(
    r: RethinkDB, conn: Any, configs: list[TableConfig], batch: int = BATCH
) -> list[CleanResult]:
    """``clean_table`` for each of ``configs``, in order."""
    return [await clean_table(r, conn, config, batch) for config in configs]


def _expired(r: RethinkDB, table: Any, retention: Retention, indexed: bool) -> list[Any]:
    """The selections of documents to delete (each deleted in batches)."""
    name = retention.field
    if retention.max_rows is not None:
        if indexed:
            newest_first = table.order_by(index=r.desc(name))
        else:
            newest_first = table.has_fields(name).order_by(r.desc(name))
        return [newest_first.skip(retention.max_rows)]
    max_age = retention.max_age
    assert max_age is not None
    epoch_cutoff = time.time() - max_age
    time_cutoff = r.now().sub(max_age)
    if indexed:
        return [
            table.between(MIN_NUMBER, epoch_cutoff, index=name),
            table.between(r.epoch_time(MIN_TIME_EPOCH), time_cutoff, index=name),
        ]

    def expired(doc: Any) -> Any:
        value = doc[name].default(None)
        kind = value.type_of()
        return r.branch(
            kind.eq("NUMBER"),
            value.lt(epoch_cutoff),
            r.branch(kind.eq("PTYPE<TIME>"), value.lt(time_cutoff), False),
        )

    return [table.filter(expired)]


async def _delete_in_batches(selection: Any, conn: Any, batch: int) -> int:
    deleted = 0
    while True:
        result = await selection.limit(batch).delete().run(conn)
        if result.get("errors"):
            raise CleanError(result.get("first_error", "delete failed"))
        deleted += result.get("deleted", 0)
        if result.get("deleted", 0) < batch:
            return deleted


class AutoClean(Follower):
    """The worker's background clean: every ``every`` seconds, each table with a retention.

    A round that fails (RethinkDB unavailable) is logged and tried again ``every``
    seconds later, like any other (``Follower`` with a constant wait)."""

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        configs: TablesConfig,
        every: float,
        *,
        verbose: bool = True,
    ) -> None:
        super().__init__(r, address, "autoclean", delay=every, max_delay=every)
        self.tables = with_retention(configs)
        self.every = every
        self.verbose = verbose

    async def run(self, start_after: asyncio.Event | None = None) -> None:
        """Clean at once (after ``start_after`` is set), then every ``every`` seconds."""
        if not self.tables:
            return
        if start_after is not None:
            await self.until(start_after)
        await self.follow(self._round)

    async def clean_once(self) -> list[CleanResult]:
        """One round over every table; failures are logged (and retried next round)."""
        results: list[CleanResult] = []
        await self.attempt(functools.partial(self._round, results=results), retry_in=self.every)
        return results

    async def _round(self, conn: Any, results: list[CleanResult] | None = None) -> bool:
        for config in self.tables:
            if self.stopping:
                break
            result = await clean_table(self.r, conn, config)
            if results is not None:
                results.append(result)
            self._log(config, result)
        return False  # never done: the next round is in ``every`` seconds

    def _log(self, config: TableConfig, result: CleanResult) -> None:
        assert config.retention is not None
        if result.error is not None:
            logger.error("autoclean: %s", result.describe(config.retention))
        elif result.deleted and self.verbose:
            logger.info("autoclean: %s", result.describe(config.retention))
