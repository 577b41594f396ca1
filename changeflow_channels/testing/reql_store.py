"""In-memory storage of the ReQL test server: databases, tables, secondary
indexes, the system database ``rethinkdb``, and fan-out of changes to feeds.

Documents are keyed by :func:`sort_key` of their primary key, so ReQL equality
(``1 == 1.0``) holds for lookups. Every write goes through
:meth:`Table.apply`, which keeps the secondary indexes up to date and hands the
change to the table's feeds (table-wide ones in a list, ``get().changes()``
ones keyed by primary key), so a write costs O(indexes + interested feeds).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from .reql_datum import sort_key
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError

logger = logging.getLogger(__name__)

SYSTEM_DB = "rethinkdb"
# What the real 2.4 server says when a feed's table goes away (ReqlOpFailedError).
FEED_UNAVAILABLE = "Changefeed aborted (unavailable)."
NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class Subscriber(Protocol):
    """What a table hands its changes to (a changefeed)."""

    def push(self, old: Any, new: Any) -> None: ...

    def abort(self, message: str) -> None: ...


class FeedSource:
    """Something a changefeed can follow: a table or a system table."""

    db: str
    name: str
    primary_key: str = "id"
    is_system = False

    def __init__(self) -> None:
        self.feeds: dict[Subscriber, None] = {}  # insertion-ordered set
        self.key_feeds: dict[tuple, dict[Subscriber, None]] = {}

    def notify(self, key: tuple, old: Any, new: Any) -> None:
        for feed in self.feeds:
            feed.push(old, new)
        point = self.key_feeds.get(key)
        if point:
            for feed in point:
                feed.push(old, new)

    def subscribe(self, feed: Subscriber, key: tuple | None = None) -> None:
        if key is None:
            self.feeds[feed] = None
        else:
            self.key_feeds.setdefault(key, {})[feed] = None

    def unsubscribe(self, feed: Subscriber, key: tuple | None = None) -> None:
        if key is None:
            self.feeds.pop(feed, None)
            return
        point = self.key_feeds.get(key)
        if point is not None:
            point.pop(feed, None)
            if not point:
                del self.key_feeds[key]

    def abort_feeds(self, message: str) -> None:
        feeds = list(self.feeds)
        for point in self.key_feeds.values():
            feeds.extend(point)
        for feed in feeds:
            feed.abort(message)

    @property
    def qualified(self) -> str:
        return f"{self.db}.{self.name}"

    # Read interface shared with Table.
    def scan(self) -> list[dict]:
        raise NotImplementedError

    def get(self, key: Any) -> dict | None:
        wanted = sort_key(key)
        for row in self.scan():
            if sort_key(row.get(self.primary_key)) == wanted:
                return row
        return None


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
        if self.multi and isinstance(value, list):
            return value
        return [value]

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
            "durability": "hard",
            "id": self.id,
            "indexes": sorted(self.indexes),
            "name": self.name,
            "primary_key": self.primary_key,
            "shards": [{"nonvoting_replicas": [], "primary_replica": server, "replicas": [server]}],
            "write_acks": "majority",
            "write_hook": None,
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
            ],
            "status": {
                "all_replicas_ready": True,
                "ready_for_outdated_reads": True,
                "ready_for_reads": True,
                "ready_for_writes": True,
            },
        }


class SystemTable(FeedSource):
    """A read-only view in the ``rethinkdb`` database, computed on each read."""

    is_system = True

    def __init__(self, name: str, rows: Callable[[], list[dict]]) -> None:
        super().__init__()
        self.db, self.name = SYSTEM_DB, name
        self._rows = rows
        self.indexes: dict[str, Index] = {}

    def scan(self) -> list[dict]:
        return sorted(self._rows(), key=lambda row: sort_key(row.get("id")))


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
        self.dbs: dict[str, Database] = {}
        self.system = self._system_tables()
        self.create_db("test")

    # -- system tables --------------------------------------------------------------

    def _system_tables(self) -> dict[str, SystemTable]:
        def tables() -> list[Table]:
            return [t for db in self.dbs.values() for t in db.tables.values()]

        views: dict[str, Callable[[], list[dict]]] = {
            "cluster_config": lambda: [{"heartbeat_timeout_secs": 10, "id": "heartbeat"}],
            "current_issues": list,
            "db_config": lambda: [{"id": db.id, "name": db.name} for db in self.dbs.values()],
            "jobs": list,
            "logs": list,
            "permissions": list,
            "server_config": lambda: [
                {
                    "cache_size_mb": "auto",
                    "id": self.server_id,
                    "name": self.server_name,
                    "tags": ["default"],
                }
            ],
            "server_status": lambda: [self._server_status()],
            "stats": list,
            "table_config": lambda: [t.config_row() for t in tables()],
            "table_status": lambda: [t.status_row() for t in tables()],
            "users": lambda: [{"id": "admin", "password": False}],
        }
        return {name: SystemTable(name, rows) for name, rows in views.items()}

    def _server_status(self) -> dict[str, Any]:
        return {
            "id": self.server_id,
            "name": self.server_name,
            "network": {"canonical_addresses": [], "hostname": "localhost", "reql_port": 28015},
            "process": {
                "argv": [],
                "cache_size_mb": 100,
                "pid": 0,
                "version": "rethinkdb 2.4.0 (ReQL test server)",
            },
        }

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

    def table(self, db: str, name: str) -> TableLike:
        if db == SYSTEM_DB:
            view = self.system.get(name)
            if view is None:
                raise ReqlOpFailedError(f"Table `{db}.{name}` does not exist.")
            return view
        table = self.db(db).tables.get(name)
        if table is None:
            raise ReqlOpFailedError(f"Table `{db}.{name}` does not exist.")
        return table

    def table_names(self, db: str) -> list[str]:
        if db == SYSTEM_DB:
            return sorted(self.system)
        return sorted(self.db(db).tables)

    def create_table(self, db: str, name: str, primary_key: str = "id") -> Table:
        check_name(name, "Table")
        if db == SYSTEM_DB:
            raise ReqlOpFailedError(
                "Database `rethinkdb` is special; you can't create new tables in it."
            )
        database = self.db(db)
        if name in database.tables:
            raise ReqlOpFailedError(f"Table `{db}.{name}` already exists.")
        table = database.tables[name] = Table(self, db, name, primary_key)
        self._system_change("table_config", None, table.config_row())
        self._system_change("table_status", None, table.status_row())
        return table

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
        old = table.config_row()
        change()
        self._system_change("table_config", old, table.config_row())

    def all_sources(self) -> list[FeedSource]:
        tables: list[FeedSource] = [t for db in self.dbs.values() for t in db.tables.values()]
        return tables + list(self.system.values())


def check_name(name: str, what: str) -> None:
    if not NAME_RE.match(name):
        raise ReqlQueryLogicError(
            f"{what} name `{name}` invalid (Use A-Z, a-z, 0-9, _ and - only)."
        )
