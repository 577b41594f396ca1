"""Writing pushes to RethinkDB: one ``PushRequest`` in, one result message out."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from rethinkdb.errors import (
    ReqlError,
    ReqlOpFailedError,
)

from ..conf import get_settings
from ..pushes import (
    CONFLICT,
    INVALID,
    NOT_FOUND,
    REJECTED,
    RESULT_TYPE,
    UNAVAILABLE,
    PushError,
    PushRequest,
    error_result,
)
from ..rethink import LOST_PRIMARY, Reconnecting, is_connection_error
from ..tables.ddl import TableRegistry, repair_table, table_exists
from .feed_gate import FEED_NOT_READY, AlwaysOpen, FeedGate
from .push_checked import write_expected
from .push_keys import PushKeys

logger = logging.getLogger(__name__)

COUNTS = ("inserted", "replaced", "unchanged", "deleted", "skipped", "errors")
EXPR_DEPTH = 100
WRITE_TIMEOUT = 5.0


class PushWriter:
    """Applies pushes, creating a missing database and table first.

    The write is tried optimistically; only a refused write costs the extra
    round trips of asking whether the table exists (and creating it if not). While RethinkDB is unreachable the
    push is retried until ``deadline`` seconds have passed, and then answered
    with an error: it is never acknowledged before RethinkDB did.
    """

    def __init__(
        self,
        connection: Reconnecting,
        tables: TableRegistry,
        deadline: float,
        idempotency_window: float | None = None,
    ) -> None:
        self.connection = connection
        self.r = connection.r
        self.tables = tables
        self.deadline = deadline
        # The records of pushes with an idempotency key (push_keys.py).
        if idempotency_window is None:
            idempotency_window = get_settings().idempotency_window
        self.push_keys = PushKeys(connection, idempotency_window)
        # Tables written to, so a clean shutdown can wait for their changes.
        self.written: set[tuple[str, str]] = set()
        self.feed_gate: FeedGate | AlwaysOpen = AlwaysOpen()  # set by the flow

    async def write(self, request: PushRequest) -> dict[str, Any]:
        """Write ``request``; return the ``changeflow.push.result`` message."""
        request, generated = self.with_keys(request)
        return await self.write_keyed(request, generated)

    async def write_keyed(
        self,
        request: PushRequest,
        generated: list[Any],
        *,
        retry: bool = False,
        give_up: float | None = None,
    ) -> dict[str, Any]:
        """``write`` of a request that went through ``with_keys`` already.

        ``retry``: an earlier attempt may have landed (its documents are
        recognised); ``give_up``: the ``time.monotonic()`` after which an
        unreachable RethinkDB makes this an error (default: ``deadline`` from now).
        """
        if give_up is None:
            give_up = time.monotonic() + self.deadline
        delay = 0.1
        created = False
        while True:
            conn = None
            try:
                conn = await self.connection.get()
                if not await self.feed_gate.open(conn, request.database, request.table, give_up):
                    return error_result(request.id, FEED_NOT_READY, UNAVAILABLE)
                try:
                    counts = await self._apply_in_time(conn, request, retry, generated)
                except (ReqlOpFailedError, *LOST_PRIMARY):
                    # A missing table, or a lost primary (the write may have landed):
                    # tried again until ``give_up`` (then answered as refused).
                    if not created and not await table_exists(
                        self.r, conn, request.database, request.table
                    ):
                        await self.tables.ensure(conn, request.database, request.table)
                        created = True
                    elif await self._writable(conn, request, give_up):
                        retry = True  # a write of several documents may have landed in part
                    else:
                        raise
                    continue
                self.written.add((request.database, request.table))
                if counts.get("first_error"):
                    # RethinkDB's text may quote a stored document: never above DEBUG.
                    logger.debug("push into %s: %s", request.stream, counts["first_error"])
                return push_result(request, counts, generated)
            except PushError as error:
                return error_result(request.id, str(error), INVALID)
            except (ReqlError, OSError, asyncio.TimeoutError) as error:
                if isinstance(error, ReqlError) and not is_connection_error(error, conn):
                    # Its text may quote documents (ours, or stored ones): not answered.
                    logger.debug("push into %s refused: %s", request.stream, error.message)
                    return error_result(
                        request.id,
                        f"RethinkDB refused the write ({type(error).__name__})",
                        REJECTED,
                    )
                await self.connection.discard()
                # The write may have happened before the connection broke.
                retry = True
                if time.monotonic() + delay > give_up:
                    return error_result(
                        request.id,
                        f"RethinkDB unavailable for {self.deadline:g} s, push not written: {error}",
                        UNAVAILABLE,
                    )
                logger.warning("RethinkDB unavailable (%s); retrying push in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _writable(self, conn: Any, request: PushRequest, give_up: float) -> bool:
        """After a write failed on a table that exists: wait (until ``give_up``) for
        the table to take writes again. A table just restarted, or whose primary
        replica was lost, takes writes once RethinkDB is ready; two tables of one
        name are made one. False when it did not come back in time."""
        remaining = give_up - time.monotonic()
        if remaining <= 0:
            return False
        table = self.r.db(request.database).table(request.table)
        try:
            await repair_table(self.r, conn, request.database, request.table)
            # RethinkDB takes whole seconds here.
            ready = table.wait(wait_for="ready_for_writes", timeout=max(1, round(remaining)))
            await asyncio.wait_for(ready.run(conn), remaining + WRITE_TIMEOUT)
        except ReqlOpFailedError as error:
            logger.info("%s.%s does not take writes: %s", request.database, request.table, error)
            return False
        return True

    def with_keys(self, request: PushRequest) -> tuple[PushRequest, list[Any]]:
        """Give every inserted document without a primary key one of ours.

        Keys chosen here, not by RethinkDB, make a retried insert safe: the
        documents of an attempt that did land are recognised, not inserted twice.
        """
        if request.op != "insert":
            return request, []
        pk = self.tables.known_primary_key(request.database, request.table) or "id"
        generated: list[Any] = []
        documents = []
        for doc in request.documents:
            if pk not in doc:
                doc = {**doc, pk: str(uuid.uuid4())}
                generated.append(doc[pk])
            documents.append(doc)
        return replace(request, data=documents), generated

    async def insert_once(self, database: str, table: str, documents: list[Any]) -> dict[str, Any]:
        """One plain insert of ``documents`` (creating a missing table), tried once:
        errors, a lost connection included, are the caller's to handle."""
        conn = await self.connection.get()
        query = self.r.db(database).table(table).insert(self.r.expr(documents, EXPR_DEPTH))
        try:
            return await asyncio.wait_for(query.run(conn), WRITE_TIMEOUT)
        except ReqlOpFailedError:
            if await table_exists(self.r, conn, database, table):
                raise
        # Nothing was written: the table did not exist.
        await self.tables.ensure(conn, database, table)
        return await asyncio.wait_for(query.run(conn), WRITE_TIMEOUT)

    async def _insert(
        self, conn: Any, request: PushRequest, table: Any, generated: list[Any]
    ) -> dict[str, Any]:
        """A first insert. Documents with keys of their own may find them taken:
        RethinkDB's error would quote the stored document, so a taken key keeps its
        document (unchanged) and is reported by its key alone."""
        r, docs = self.r, request.documents
        ours = set(generated)
        pk = self.tables.known_primary_key(request.database, request.table)
        if pk is not None and all(_generated(doc.get(pk), ours) for doc in docs):
            # Every key a fresh one of ours: none can be taken.
            return await table.insert(r.expr(docs, EXPR_DEPTH)).run(conn)
        counts = await table.insert(
            r.expr(docs, EXPR_DEPTH),
            conflict=lambda key_, old, new: old,
            return_changes=True,
        ).run(conn)
        changes = counts.pop("changes", [])
        if not counts.get("unchanged"):
            return counts
        if pk is None:
            pk = await self.tables.primary_key(conn, request.database, request.table)
        own = [doc[pk] for doc in docs if pk in doc and not _generated(doc[pk], ours)]
        written = {_key_id(change["new_val"].get(pk)) for change in changes if change["new_val"]}
        taken = [found for found in own if _key_id(found) not in written]
        # Every unchanged document is a taken key (a key given twice in the push too).
        counts["errors"] = counts.get("errors", 0) + counts["unchanged"]
        counts["unchanged"] = 0
        counts["refusal"] = (
            f"Duplicate primary key `{pk}`: "
            + ", ".join(json.dumps(found, ensure_ascii=False) for found in taken[:10])
            + (f" and {len(taken) - 10} more" if len(taken) > 10 else "")
        ).rstrip(": ")
        return counts

    async def _apply_in_time(
        self, conn: Any, request: PushRequest, retry: bool, generated: list[Any]
    ) -> dict[str, Any]:
        # A connection that went half-open would never answer: a write that
        # takes this long counts as a lost connection (and is retried safely).
        return await asyncio.wait_for(self._apply(conn, request, retry, generated), WRITE_TIMEOUT)

    async def _apply(
        self, conn: Any, request: PushRequest, retry: bool, generated: list[Any] | None = None
    ) -> dict[str, Any]:
        r = self.r
        table = r.db(request.database).table(request.table)
        op, key, docs = request.op, request.key, request.documents
        if request.expect is not None:
            return await write_expected(r, table, request, conn, retry)
        if op == "insert":
            if not retry:
                return await self._insert(conn, request, table, generated or [])
            # A document equal to ours is our own earlier attempt: unchanged.
            # Anything else under that key is a real duplicate, as on the first try.
            counts = await table.insert(
                r.expr(docs, EXPR_DEPTH),
                conflict=lambda key_, old, new: r.branch(
                    old.eq(new),
                    old,
                    r.error("Duplicate primary key: another document has this key"),
                ),
            ).run(conn)
            if counts.get("errors"):
                counts["refusal"] = "Duplicate primary key"
            return counts
        if op == "upsert":
            return await table.insert(r.expr(docs, EXPR_DEPTH), conflict="update").run(conn)
        if op == "delete" and key is not None:
            return await table.get(key).delete().run(conn)
        pk = await self.tables.primary_key(conn, request.database, request.table)
        if op == "delete":
            keys = [doc.get(pk) if isinstance(doc, dict) else doc for doc in docs]
            if any(k is None for k in keys):
                raise PushError(f"delete: every document needs its primary key `{pk}`")
            return await table.get_all(*keys).delete().run(conn)
        if key is not None:
            doc = dict(request.data)
            if pk in doc and doc[pk] != key:
                raise PushError(f"{op}: the document's `{pk}` differs from key {key!r}")
            doc[pk] = key
            query = table.get(key)
            if op == "update":
                return await query.update(r.expr(doc, EXPR_DEPTH)).run(conn)
            return await query.replace(r.expr(doc, EXPR_DEPTH)).run(conn)
        missing = [i for i, doc in enumerate(docs) if pk not in doc]
        if missing:
            raise PushError(
                f"{op}: document {missing[0]} has no primary key `{pk}` and no key given"
            )
        if op == "replace":
            return await table.insert(r.expr(docs, EXPR_DEPTH), conflict="replace").run(conn)
        total: dict[str, Any] = {}
        for doc in docs:  # update of several documents, each by its own key
            result = await table.get(doc[pk]).update(r.expr(doc, EXPR_DEPTH)).run(conn)
            for name in COUNTS:
                total[name] = total.get(name, 0) + result.get(name, 0)
            if result.get("first_error") and "first_error" not in total:
                total["first_error"] = result["first_error"]
        return total


def push_result(
    request: PushRequest, counts: dict[str, Any], generated: list[Any]
) -> dict[str, Any]:
    """The ``changeflow.push.result`` of a write whose counts are ``counts``."""
    result: dict[str, Any] = {
        "type": RESULT_TYPE,
        "id": request.id,
        "ok": not counts.get("errors"),
        "generated_keys": generated,
    }
    for name in COUNTS:
        result[name] = counts.get(name, 0)
    if counts.get("errors"):
        # Our own text only: RethinkDB's (``first_error``) may quote stored documents.
        total = sum(counts.get(name, 0) for name in COUNTS)
        result["error"] = counts.get("refusal") or (
            f"RethinkDB refused {counts['errors']} of {total} document(s)"
        )
        result["code"] = REJECTED
    elif counts.get("conflicts"):
        result["ok"] = False
        result["error"] = (
            f"{len(counts['conflicts'])} document(s) changed since they were checked; not written"
        )
        result["code"] = CONFLICT
    elif request.op == "update" and counts.get("skipped"):
        # No document under the key: nothing was written, which the sender must hear.
        result["ok"] = False
        missing = counts["skipped"]
        result["error"] = (
            f"update: no document has key {request.key!r}"
            if request.key is not None
            else f"update: {missing} of the documents' keys have no document"
        )
        result["code"] = NOT_FOUND
    if counts.get("conflicts"):
        result["conflicts"] = counts["conflicts"]
    return result


def _generated(key: Any, ours: set[Any]) -> bool:
    return isinstance(key, str) and key in ours


def _key_id(key: Any) -> str:
    """A primary key as a comparable text (keys may be arrays)."""
    return json.dumps(key, sort_keys=True, ensure_ascii=False)
