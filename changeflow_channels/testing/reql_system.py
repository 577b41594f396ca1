"""The system tables of the ``rethinkdb`` database: read-only views computed from
the store on each read (``table_config``, ``table_status``, ``db_config``,
``server_status``...), and their rows by id for ``identifier_format="uuid"``."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .reql_datum import sort_key
from .reql_sources import SYSTEM_DB, FeedSource

if TYPE_CHECKING:
    from .reql_store import Index, Store, Table


class SystemTable(FeedSource):
    """A read-only view in the ``rethinkdb`` database, computed on each read."""

    is_system = True

    def __init__(self, name: str, rows: Callable[[], list[dict]]) -> None:
        super().__init__()
        self.db, self.name = SYSTEM_DB, name
        self.id = str(uuid.uuid4())
        self._rows = rows
        self.indexes: dict[str, Index] = {}

    def scan(self) -> list[dict]:
        return sorted(self._rows(), key=lambda row: sort_key(row.get("id")))


def system_views(store: Store) -> dict[str, SystemTable]:
    """The views of one store, by name."""

    def tables() -> list[Table]:
        return [t for db in store.dbs.values() for t in db.tables.values()]

    views: dict[str, Callable[[], list[dict]]] = {
        "cluster_config": lambda: [{"heartbeat_timeout_secs": 10, "id": "heartbeat"}],
        "current_issues": list,
        "db_config": lambda: [{"id": db.id, "name": db.name} for db in store.dbs.values()],
        "jobs": lambda: _jobs(store),
        "logs": list,
        "permissions": list,
        "server_config": lambda: [
            {
                "cache_size_mb": "auto",
                "id": store.server_id,
                "name": store.server_name,
                "tags": ["default"],
            }
        ],
        "server_status": lambda: [_server_status(store)],
        "stats": list,
        "table_config": lambda: [t.config_row() for t in tables()],
        "table_status": lambda: [t.status_row() for t in tables()],
        "users": lambda: [{"id": "admin", "password": False}],
    }
    return {name: SystemTable(name, rows) for name, rows in views.items()}


def _jobs(store: Store) -> list[dict]:
    """The queries running now: the one reading this table, and every open changefeed."""

    def job(job_id: str, seconds: float) -> dict:
        return {
            "duration_sec": round(seconds, 6),
            "id": ["query", job_id],
            "info": {"user": "admin"},
            "servers": [store.server_name],
            "type": "query",
        }

    rows = [job(str(uuid.uuid4()), 0.0)]
    feeds: dict[int, Any] = {}
    for source in store.all_sources():
        for feed in source.feeds:
            feeds[id(feed)] = feed
        for point in source.key_feeds.values():
            for feed in point:
                feeds[id(feed)] = feed
    now = time.monotonic()
    for feed in feeds.values():
        job_id = getattr(feed, "job_id", None)
        if job_id is not None:
            rows.append(job(job_id, now - feed.started))
    return rows


def _server_status(store: Store) -> dict[str, Any]:
    return {
        "id": store.server_id,
        "name": store.server_name,
        "network": {"canonical_addresses": [], "hostname": "localhost", "reql_port": 28015},
        "process": {
            "argv": [],
            "cache_size_mb": 100,
            "pid": 0,
            "version": "rethinkdb 2.4.0 (ReQL test server)",
        },
    }


def _config_by_id(store: Store, row: dict) -> dict:
    server = store.server_id
    shards = [
        {"nonvoting_replicas": [], "primary_replica": server, "replicas": [server]}
        for _ in row["shards"]
    ]
    return {**row, "db": store.db_id(row["db"]), "shards": shards}


def _status_by_id(store: Store, row: dict) -> dict:
    server = store.server_id
    shards = [
        {"primary_replicas": [server], "replicas": [{"server": server, "state": "ready"}]}
        for _ in row["shards"]
    ]
    return {**row, "db": store.db_id(row["db"]), "raft_leader": server, "shards": shards}


# identifier_format="uuid": system tables' rows with ids where they name databases/servers.
UUID_ROWS: dict[str, Callable[[Store, dict], dict]] = {
    "table_config": _config_by_id,
    "table_status": _status_by_id,
}
