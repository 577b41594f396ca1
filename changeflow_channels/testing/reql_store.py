"""In-memory storage of the ReQL test server: databases, tables, secondary
indexes and fan-out of changes to feeds (the ``rethinkdb`` database's views are
in ``reql_system``, what a feed follows in ``reql_sources``).

Documents are keyed by :func:`sort_key` of their primary key, so ReQL equality
(``1 == 1.0``) holds for lookups. Every write goes through
:meth:`Table.apply`, which keeps the secondary indexes up to date and hands the
change to the table's feeds (table-wide ones in a list, ``get().changes()``
ones keyed by primary key), so a write costs O(indexes + interested feeds).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, Bound, make_binary, sort_key
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_sources import SYSTEM_DB, FeedSource, Subscriber
from .reql_system import UUID_ROWS, SystemTable, system_views

__all__ = ["SYSTEM_DB", "FeedSource", "Subscriber", "SystemTable"]  # re-exported

logger = logging.getLogger(__name__)

# What the real 2.4 server says when a feed's table goes away (ReqlOpFailedError).
FEED_UNAVAILABLE = "Changefeed aborted (unavailable)."
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
HOOK_BLOB_PREFIX = b"$reql_write_hook_function$"


class Index:
    """A secondary index: value key -> primary keys (an ordered set), kept current."""

    def __init__(
        self, name: str, function: Any, compute: Callable[[dict], Any], multi: bool
    ) -> None:
        self.name = name
        self.function = function  # the index function's term, for index_status
        self.compute = compute  # document -> index value; raises when not indexable
        self.multi = multi
        self.entries: dict[tuple, tuple[Any, dict[tuple, None]]] = {}

    def values(self, doc: dict) -> list[Any]:
        try:
            value = self.compute(doc)
        except Exception:  # a document the function fails on is simply not indexed
            return []
        # A value that cannot be a secondary key (null, an object, r.minval...) leaves
        # the document out of the index, as a failing function does.
        if self.multi and isinstance(value, list):
            return [v for v in value if _indexable(v)]
        return [value] if _indexable(value) else []

    def add(self, pk: tuple, doc: dict) -> None:
        for value in self.values(doc):
            key = sort_key(value)
            entry = self.entries.get(key)
            if entry is None:
                self.entries[key] = (value, {pk: None})
            else:
                entry[1][pk] = None

    def remove(self, pk: tuple, doc: dict) -> None:
        for value in self.values(doc):
            key = sort_key(value)
            entry = self.entries.get(key)
            if entry is not None:
                entry[1].pop(pk, None)
                if not entry[1]:
                    del self.entries[key]


def _indexable(value: Any) -> bool:
    """Secondary keys are numbers, strings, bools, pseudo-types or arrays of them."""
    if value is None or isinstance(value, Bound):
        return False
    if isinstance(value, dict):
        return PTYPE in value
    if isinstance(value, list):
        return all(_indexable(v) for v in value)
    return True


class Table(FeedSource):
    """A user table."""

    def __init__(self, store: Store, db: str, name: str, primary_key: str) -> None:
        super().__init__()
        self.store = store
        self.db, self.name, self.primary_key = db, name, primary_key
        self.id = str(uuid.uuid4())
        self.docs: dict[tuple, dict] = {}
        self.indexes: dict[str, Index] = {}
        self._keys: list[tuple] | None = None  # sorted primary keys, until an insert/delete
        self.write_hook: Any = None  # the hook's FUNC term (reql_write_hooks)
        self.durability = "hard"
        self.write_acks = "majority"
        self.shards = 1

    def scan(self) -> list[dict]:
        """All documents in primary key order (as a single-shard table returns them)."""
        if self._keys is None:
            self._keys = sorted(self.docs)
        docs = self.docs
        return [docs[k] for k in self._keys]

    def get(self, key: Any) -> dict | None:
        return self.docs.get(sort_key(key))

    def apply(self, key: tuple, old: dict | None, new: dict | None) -> None:
        """Store one change (insert: old None; delete: new None) and notify feeds."""
        if new is None:
            del self.docs[key]
            self._keys = None
        else:
            if old is None:
                self._keys = None
            self.docs[key] = new
        for index in self.indexes.values():
            if old is not None:
                index.remove(key, old)
            if new is not None:
                index.add(key, new)
        if self.feeds or self.key_feeds:
            self.notify(key, old, new)

    def add_index(self, index: Index) -> None:
        for key, doc in self.docs.items():
            index.add(key, doc)
        self.indexes[index.name] = index

    def config_row(self) -> dict[str, Any]:
        server = self.store.server_name
        return {
            "db": self.db,
            "durability": self.durability,
            "id": self.id,
            "indexes": sorted(self.indexes),
            "name": self.name,
            "primary_key": self.primary_key,
            "shards": [
                {"nonvoting_replicas": [], "primary_replica": server, "replicas": [server]}
                for _ in range(self.shards)
            ],
            "write_acks": self.write_acks,
            "write_hook": hook_config(self),
        }

    def status_row(self) -> dict[str, Any]:
        server = self.store.server_name
        return {
            "db": self.db,
            "id": self.id,
            "name": self.name,
            "raft_leader": server,
            "shards": [
                {"primary_replicas": [server], "replicas": [{"server": server, "state": "ready"}]}
                for _ in range(self.shards)
            ],
            "status": {
                "all_replicas_ready": True,
                "ready_for_outdated_reads": True,
                "ready_for_reads": True,
                "ready_for_writes": True,
            },
        }


TableLike = Table | SystemTable


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        self.id = str(uuid.uuid4())
        self.tables: dict[str, Table] = {}


class Store:
    """All databases of one test server."""

    def __init__(self, server_name: str = "reql_test_server") -> None:
        self.server_name = server_name
        self.server_id = str(uuid.uuid4())
        self.system_db_id = str(uuid.uuid4())
        self.dbs: dict[str, Database] = {}
        self.system = system_views(self)
        # rethinkdb._debug_scratch: an ordinary writable table, hidden from table_list.
        self.scratch = Table(self, SYSTEM_DB, "_debug_scratch", "id")
        self.create_db("test")

    # -- system tables --------------------------------------------------------------

    def _system_change(self, name: str, old: Any, new: Any) -> None:
        view = self.system[name]
        row = new if new is not None else old
        view.notify(sort_key(row["id"]), old, new)

    # -- databases --------------------------------------------------------------------

    def db(self, name: str) -> Database:
        database = self.dbs.get(name)
        if database is None:
            raise ReqlOpFailedError(f"Database `{name}` does not exist.")
        return database

    def db_id(self, name: str) -> str:
        return self.system_db_id if name == SYSTEM_DB else self.db(name).id

    def db_names(self) -> list[str]:
        return sorted([SYSTEM_DB, *self.dbs])

    def create_db(self, name: str) -> Database:
        check_name(name, "Database")
        if name in self.dbs or name == SYSTEM_DB:
            raise ReqlOpFailedError(f"Database `{name}` already exists.")
        database = self.dbs[name] = Database(name)
        self._system_change("db_config", None, {"id": database.id, "name": name})
        return database

    def drop_db(self, name: str) -> tuple[dict, int]:
        """Drop a database and its tables; returns its config row and the table count."""
        check_name(name, "Database")
        if name == SYSTEM_DB:
            raise ReqlOpFailedError("Database `rethinkdb` is special; you can't delete it.")
        database = self.db(name)
        count = len(database.tables)
        for table_name in list(database.tables):
            self.drop_table(name, table_name)
        del self.dbs[name]
        row = {"id": database.id, "name": name}
        self._system_change("db_config", row, None)
        return row, count

    # -- tables -----------------------------------------------------------------------

    def table(self, db: str, name: str, identifier_format: str | None = None) -> TableLike:
        """A table; for a system table, ``identifier_format="uuid"`` gives the view
        naming databases and servers by id."""
        if db == SYSTEM_DB:
            if name == self.scratch.name:
                return self.scratch
            view = self.system.get(name)
            if view is None:
                raise ReqlOpFailedError(f"Table `{db}.{name}` does not exist.")
            if identifier_format == "uuid" and name in UUID_ROWS:
                convert = UUID_ROWS[name]
                return SystemTable(name, lambda: [convert(self, row) for row in view.scan()])
            return view
        table = self.db(db).tables.get(name)
        if table is None:
            raise ReqlOpFailedError(f"Table `{db}.{name}` does not exist.")
        return table

    def table_names(self, db: str) -> list[str]:
        if db == SYSTEM_DB:
            return sorted(self.system)
        return sorted(self.db(db).tables)

    def create_table(
        self, db: str, name: str, primary_key: str = "id", durability: str = "hard", shards: int = 1
    ) -> Table:
        check_name(name, "Table")
        if db == SYSTEM_DB:
            raise ReqlOpFailedError(
                "Database `rethinkdb` is special; you can't create new tables in it."
            )
        database = self.db(db)
        if name in database.tables:
            raise ReqlOpFailedError(f"Table `{db}.{name}` already exists.")
        table = database.tables[name] = Table(self, db, name, primary_key)
        table.durability, table.shards = durability, shards
        self._system_change("table_config", None, table.config_row())
        self._system_change("table_status", None, table.status_row())
        return table

    def rename_table(self, table: Table, name: str) -> None:
        """Give a table a new name in its database (its id, data and feeds stay)."""
        tables = self.db(table.db).tables
        del tables[table.name]
        table.name = name
        tables[name] = table

    def drop_table(self, db: str, name: str) -> dict:
        """Drop a table, abort its feeds; returns its last config row."""
        check_name(name, "Table")
        if db == SYSTEM_DB:
            raise ReqlOpFailedError(
                "Database `rethinkdb` is special; you can't delete tables in it."
            )
        table = self.table(db, name)
        assert isinstance(table, Table)
        row = table.config_row()
        del self.dbs[db].tables[name]
        table.abort_feeds(FEED_UNAVAILABLE)
        self._system_change("table_config", row, None)
        self._system_change("table_status", table.status_row(), None)
        return row

    def change_indexes(self, table: Table, change: Callable[[], object]) -> None:
        """Run an index change and report it on ``table_config`` feeds."""
        self.change_config(table, change)

    def change_config(self, table: Table, change: Callable[[], object]) -> None:
        """Run a change of a table's configuration and report it on ``table_config``
        and ``table_status`` feeds."""
        old, old_status = table.config_row(), table.status_row()
        change()
        self._system_change("table_config", old, table.config_row())
        status = table.status_row()
        if status != old_status:
            self._system_change("table_status", old_status, status)

    def all_sources(self) -> list[FeedSource]:
        tables: list[FeedSource] = [t for db in self.dbs.values() for t in db.tables.values()]
        return [*tables, self.scratch, *self.system.values()]


def hook_config(table: Table) -> dict[str, Any] | None:
    """A table's write hook as its config and ``get_write_hook()`` show it."""
    if table.write_hook is None:
        return None
    text = json.dumps(table.write_hook, separators=(",", ":"))
    return {
        "function": make_binary(HOOK_BLOB_PREFIX + text.encode("utf-8")),
        "query": f"setWriteHook({text})",
    }


def check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise ReqlQueryLogicError(
            f"{what} name `{name}` invalid (Use A-Z, a-z, 0-9, _ and - only)."
        )
