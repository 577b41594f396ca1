"""Creating databases and tables (with their configured keys and indexes), knowing primary keys."""

from __future__ import annotations

import logging
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from .config import IndexSpec, TableConfig, TablesConfig

logger = logging.getLogger(__name__)


# RethinkDB says "does not exist" and "already exists" with one error class,
# ReqlOpFailedError, as for other refusals: after such an error RethinkDB is asked
# what is there, the error's text is never read.


async def database_exists(r: RethinkDB, conn: Any, database: str) -> bool:
    return bool(await r.db_list().contains(database).run(conn))


async def table_exists(r: RethinkDB, conn: Any, database: str, table: str) -> bool:
    """Whether ``database.table`` exists (False when the database does not)."""
    query = r.branch(
        r.db_list().contains(database), r.db(database).table_list().contains(table), False
    )
    return bool(await query.run(conn))


async def create_table(
    r: RethinkDB,
    conn: Any,
    database: str,
    table: str,
    primary_key: str = "id",
    *,
    replicas: int = 1,
    shards: int = 1,
) -> None:
    """Create the database and the table unless they exist; wait until the table is ready.

    A new table gets ``replicas`` and ``shards`` (an existing one keeps its own).

    Two workers (or two pushes) may race to create the same table: a refused
    create of what exists now is success here, two tables of one name are made one again, and
    ``wait()`` makes sure the table is ready before anyone writes to it or
    opens its changefeed.
    """
    try:
        await r.db_create(database).run(conn)
        logger.info("created database %s", database)
    except ReqlOpFailedError:
        if not await database_exists(r, conn, database):
            raise
    options: dict[str, Any] = {} if primary_key == "id" else {"primary_key": primary_key}
    if replicas != 1 or shards != 1:
        options.update(replicas=replicas, shards=shards)
    try:
        await r.db(database).table_create(table, **options).run(conn)
        logger.info(
            "created table %s.%s (primary key %s, %d replica(s), %d shard(s))",
            database,
            table,
            primary_key,
            replicas,
            shards,
        )
    except ReqlOpFailedError:
        if not await table_exists(r, conn, database, table):
            raise
    # Racing creates (another worker, another client) may have made two tables.
    await repair_table(r, conn, database, table)
    # Not wait()'s default (every replica ready): a table of several replicas with
    # one server down takes writes (and feeds) all the same.
    await r.db(database).table(table).wait(wait_for="ready_for_writes").run(conn)


def index_create_query(r: RethinkDB, table: Any, index: IndexSpec) -> Any:
    """``index_create`` for a simple index (on the field of its name) or a compound one."""
    if not index.compound:
        return table.index_create(index.name)
    fields = index.fields
    return table.index_create(index.name, lambda doc: [doc[name] for name in fields])


async def create_indexes(r: RethinkDB, conn: Any, config: TableConfig) -> list[str] | None:
    """Create the configured indexes the table lacks (an existing one is left alone).

    Returns the configured index names (to wait for), or None, with an error
    logged, when the table's real primary key is not the configured one: such
    a table is not touched.
    """
    table = r.db(config.database).table(config.table)
    actual = (await table.config().run(conn))["primary_key"]
    if actual != config.primary_key:
        logger.error(
            "table %s has primary key %r, but CHANGEFLOW_TABLES says %r: left as it is "
            "(a primary key cannot be changed; copy the data into a new table to change it)",
            config.stream,
            actual,
            config.primary_key,
        )
        return None
    existing = set(await table.index_list().run(conn))
    for index in config.indexes:
        if index.name in existing:
            continue
        try:
            await index_create_query(r, table, index).run(conn)
            logger.info("created index %s on %s", index.name, config.stream)
        except ReqlOpFailedError:
            if index.name not in await table.index_list().run(conn):
                raise
    return [index.name for index in config.indexes]


async def wait_indexes(r: RethinkDB, conn: Any, config: TableConfig, names: list[str]) -> None:
    """Until the indexes ``names`` of the table are built."""
    if names:
        await r.db(config.database).table(config.table).index_wait(*names).run(conn)


class TableRegistry:
    """Creates missing databases and tables and caches primary keys.

    A table listed in ``CHANGEFLOW_TABLES`` is created with its primary key and
    indexes; any other with RethinkDB's defaults.
    """

    def __init__(self, r: RethinkDB, configs: TablesConfig | None = None) -> None:
        self.r = r
        self.configs: TablesConfig = configs or {}
        self._primary_keys: dict[tuple[str, str], str] = {}

    async def ensure(self, conn: Any, database: str, table: str) -> None:
        config = self.configs.get((database, table))
        if config is None:
            await create_table(self.r, conn, database, table)
            return
        await create_table(
            self.r,
            conn,
            database,
            table,
            config.primary_key,
            replicas=config.replicas,
            shards=config.shards,
        )
        names = await create_indexes(self.r, conn, config)
        if names is not None:
            await wait_indexes(self.r, conn, config, names)

    async def primary_key(self, conn: Any, database: str, table: str) -> str:
        key = (database, table)
        if key not in self._primary_keys:
            config = await self.r.db(database).table(table).config().run(conn)
            self._primary_keys[key] = config["primary_key"]
        return self._primary_keys[key]

    def known_primary_key(self, database: str, table: str) -> str | None:
        """The primary key if known already (from discovery, an earlier lookup or the settings)."""
        key = (database, table)
        if key in self._primary_keys:
            return self._primary_keys[key]
        config = self.configs.get(key)
        return config.primary_key if config is not None else None

    def remember(self, database: str, table: str, primary_key: str) -> None:
        """Learn a table's primary key (from ``rethinkdb.table_config``)."""
        self._primary_keys[(database, table)] = primary_key

    def forget(self, database: str, table: str) -> None:
        self._primary_keys.pop((database, table), None)


# -- Two tables with one name ---------------------------------------------------
#
# RethinkDB lets racing ``table_create`` calls make both. Every query on such a
# name then fails ("Table `db.t` is ambiguous"), for the worker and for
# everybody else. RethinkDB's advice is to keep one and drop the others through
# ``rethinkdb.table_config``. Whoever repairs (any worker, any number at once)
# keeps the same table, the one with the smallest id; the documents of the
# others are copied into it before they are dropped, so a write that landed in
# a table about to go is not lost.

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
