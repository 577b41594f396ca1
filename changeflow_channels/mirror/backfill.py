"""Copying registered models' rows into RethinkDB (``manage.py changeflow sync``).

For each model: create the database and table when missing (primary key
``"id"``), write every row in batches (``insert(..., conflict="replace")``, so
the stored document is exactly what the model serialises to now), then delete
the documents whose objects are gone. A document is only deleted if its object
is still missing when checked again, so an object created during the sync (and
pushed by its ``post_save``) is kept.

RethinkDB is written directly, with a private driver instance on a private event
loop; the ORM is read in between, outside that loop. No worker is needed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError

from ..rethink import close_quietly, connect, new_driver
from ..rethinkdb_url import parse_rethinkdb_url
from ..tables.ddl import create_table
from .config import ModelFlow
from .serializer import serialize

BATCH_SIZE = 500
EXPR_DEPTH = 100

Progress = Callable[[ModelFlow, int, int], None]
T = TypeVar("T")


class SyncError(Exception):
    """The mirror could not be written; the message says why."""


@dataclass
class SyncResult:
    flow: ModelFlow
    copied: int = 0
    removed: int = 0


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


async def ensure_table(r: RethinkDB, conn: Any, database: str, table: str) -> None:
    """Create ``database.table`` (primary key ``"id"``) when missing, as the worker
    does (racing creates included); wait until it is ready."""
    await create_table(r, conn, database, table)
    config = await r.db(database).table(table).config().run(conn)
    if config["primary_key"] != "id":
        raise SyncError(
            f"{database}.{table} has the primary key {config['primary_key']!r}; "
            'model documents need "id" (drop the table, or let the sync create it)'
        )


class ModelSync:
    """One sync run: one connection, one event loop, any number of models."""

    def __init__(self, rethinkdb_url: str, batch_size: int = BATCH_SIZE) -> None:
        self.address = parse_rethinkdb_url(rethinkdb_url)
        self.batch_size = batch_size
        self.r = new_driver()
        self.loop = asyncio.new_event_loop()
        self.conn: Any = None

    def __enter__(self) -> ModelSync:
        try:
            self.conn = self._run(connect(self.r, self.address))
        except ReqlDriverError:
            self.loop.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._run(close_quietly(self.conn))
        finally:
            self.loop.close()

    def _run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def sync(self, flow: ModelFlow, progress: Progress | None = None) -> SyncResult:
        """Make ``flow.stream`` equal to the model's table."""
        r, result = self.r, SyncResult(flow)
        self._run(ensure_table(r, self.conn, flow.database, flow.table))
        table = r.db(flow.database).table(flow.table)
        manager = flow.model._base_manager
        queryset = manager.order_by("pk")
        m2m = [f.name for f in flow.fields if f.many_to_many]
        if m2m:
            queryset = queryset.prefetch_related(*m2m)
        total = queryset.count()
        if progress:
            progress(flow, 0, total)
        seen: set[Any] = set()
        for batch in _batches(queryset.iterator(chunk_size=self.batch_size), self.batch_size):
            documents = [serialize(instance, flow) for instance in batch]
            written = self._run(
                table.insert(r.expr(documents, EXPR_DEPTH), conflict="replace").run(self.conn)
            )
            if written.get("errors"):
                raise SyncError(f"{flow.stream}: {written.get('first_error', 'write failed')}")
            seen.update(_hashable(document["id"]) for document in documents)
            result.copied += len(documents)
            if progress:
                progress(flow, result.copied, max(total, result.copied))
        stale = self._run(self._stale_keys(table, seen))
        for keys in _batches(stale, self.batch_size):
            result.removed += self._remove(flow, table, keys)
        return result

    async def _stale_keys(self, table: Any, seen: set[Any]) -> list[Any]:
        cursor = await table.get_field("id").run(self.conn)
        stale = []
        try:
            async for key in cursor:
                if _hashable(key) not in seen:
                    stale.append(key)
        finally:
            await cursor.close()
        return stale

    def _remove(self, flow: ModelFlow, table: Any, keys: list[Any]) -> int:
        """Delete the documents of ``keys`` whose objects still do not exist."""
        pk = flow.model._meta.pk
        values: dict[Any, Any] = {}
        gone: list[Any] = []
        for key in keys:
            try:
                values[pk.to_python(key)] = key
            except (ValidationError, TypeError, ValueError):
                gone.append(key)  # not a key this model could have: certainly stale
        if values:
            manager = flow.model._base_manager
            present = set(manager.filter(pk__in=list(values)).values_list("pk", flat=True))
            gone += [key for value, key in values.items() if value not in present]
        if not gone:
            return 0
        deleted = self._run(table.get_all(*gone).delete().run(self.conn))
        return int(deleted.get("deleted", 0))


def sync_models(
    flows: Iterable[ModelFlow],
    rethinkdb_url: str,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    done: Callable[[SyncResult], None] | None = None,
) -> list[SyncResult]:
    """Sync each model in turn; ``progress(flow, done, total)`` after every batch."""
    results = []
    with ModelSync(rethinkdb_url, batch_size) as run:
        for flow in flows:
            result = run.sync(flow, progress)
            results.append(result)
            if done:
                done(result)
    return results
