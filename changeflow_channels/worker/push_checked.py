"""Checked pushes (``web/push_guard.py``): the read a consumer asks for before it lets a
browser write over documents, and the write that follows, key by key, each only if
its document is still the one that was checked (compare-and-swap).

A read's answer holds the documents themselves: it goes to the consumer that asked,
which shows them to the policy and never to the browser. Nothing here logs a
document, at any level.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rethinkdb.errors import ReqlError, ReqlOpFailedError

from ..pushes import (
    INVALID,
    PUSH_TYPE,
    READ_RESULT_TYPE,
    UNAVAILABLE,
    PushError,
    PushRequest,
    error_result,
    parse_push,
    write_entries,
)
from ..rethink import RAW_FORMATS, is_connection_error
from ..tables.ddl import table_exists
from .idempotency import fingerprint, record_id

logger = logging.getLogger(__name__)

EXPR_DEPTH = 100
READ_TIMEOUT = 5.0


async def write_expected(
    r: Any, table: Any, request: PushRequest, conn: Any, retry: bool
) -> dict[str, Any]:
    """Write each ``[key, old, new]`` of ``request.expect`` if the document under
    ``key`` is still ``old``. The counts as RethinkDB's, plus ``conflicts``: the
    indexes of the entries found changed (not written). An entry whose ``new`` is its
    ``old`` writes nothing (it is answered as of its read). ``retry``: an earlier
    attempt may have landed: a document found equal to ``new`` is ours."""
    assert request.expect is not None
    counts: dict[str, Any] = {"inserted": 0, "replaced": 0, "unchanged": 0, "deleted": 0}
    counts.update(skipped=0, errors=0)
    conflicts: list[int] = []
    for index, (key, old, new) in enumerate(request.expect):
        if old == new:
            counts["skipped" if old is None else "unchanged"] += 1
            continue
        expected = "inserted" if old is None else "deleted" if new is None else "replaced"
        before, after = r.expr(old, EXPR_DEPTH), r.expr(new, EXPR_DEPTH)
        query = table.get(key).replace(_unless_changed(r, before, after))
        result = await query.run(conn, **RAW_FORMATS)
        if result.get(expected) == 1:
            counts[expected] += 1
        elif result.get("errors"):
            counts["errors"] += 1
            counts.setdefault("first_error", result.get("first_error"))
        elif retry and await table.get(key).eq(after).run(conn):
            counts[expected] += 1  # our earlier attempt's
        else:
            conflicts.append(index)
    counts["conflicts"] = conflicts
    return counts


def _unless_changed(r: Any, before: Any, after: Any) -> Callable[[Any], Any]:
    """The function of a compare-and-swap: ``after`` where the row is ``before``."""
    return lambda row: r.branch(row.eq(before), after, row)


async def read_for_write(writer: Any, message: dict[str, Any]) -> dict[str, Any]:
    """The answer to a ``changeflow.push.read``: the table's primary key and, for each
    document the push would write over (``write_entries``, in order), the document
    now stored (raw ReQL pseudo-types), or None. A missing table has none."""
    request_id = message.get("id")
    try:
        request = parse_push({**message, "type": PUSH_TYPE})
    except PushError as error:
        return _refused(request_id, str(error), INVALID)
    r = writer.r
    conn = None
    try:
        conn = await writer.connection.get()
        if request.idempotency_key is not None:
            # Written already (a retry): its recorded answer, with no read and no check.
            where = record_id(request.database, request.table, request.idempotency_key)
            done = await writer.push_keys.answered(conn, where, fingerprint(request))
            if done is not None:
                return {"type": READ_RESULT_TYPE, "id": request_id, "ok": True, "done": done}
        exists = True
        try:
            pk = await asyncio.wait_for(
                writer.tables.primary_key(conn, request.database, request.table), READ_TIMEOUT
            )
        except ReqlOpFailedError:
            if await table_exists(r, conn, request.database, request.table):
                raise
            exists, pk = False, "id"  # created with RethinkDB's default by the write
        try:
            keys = [key for key, _ in write_entries(request, pk)]
        except PushError as error:
            return _refused(request_id, str(error), INVALID)
        documents: list[Any] = [None] * len(keys)
        if exists and keys:
            table = r.db(request.database).table(request.table)
            query = r.expr(keys, EXPR_DEPTH).map(lambda key: table.get(key))
            documents = await asyncio.wait_for(query.run(conn, **RAW_FORMATS), READ_TIMEOUT)
    except (ReqlError, OSError, asyncio.TimeoutError) as error:
        if is_connection_error(error, conn) or not isinstance(error, ReqlError):
            await writer.connection.discard()
        logger.warning(
            "read before a checked push into %s failed (%s)", request.stream, _kind(error)
        )
        return _refused(request_id, "RethinkDB could not be read; push not written", UNAVAILABLE)
    return {
        "type": READ_RESULT_TYPE,
        "id": request_id,
        "ok": True,
        "pk": pk,
        "documents": documents,
    }


def _refused(request_id: Any, error: str, code: str) -> dict[str, Any]:
    return {**error_result(request_id, error, code), "type": READ_RESULT_TYPE}


def _kind(error: BaseException) -> str:
    """An error's class: its text may quote a document."""
    return type(error).__name__


Reply = Callable[[str, dict[str, Any]], Awaitable[bool]]


class PushReads:
    """Answers ``changeflow.push.read`` messages, each in a task of its own."""

    def __init__(self, writer: Any, reply: Reply) -> None:
        self.writer = writer
        self.reply = reply
        self.tasks: set[asyncio.Future[None]] = set()

    def take(self, message: dict[str, Any]) -> None:
        task = asyncio.ensure_future(self._answer(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        try:
            answer = await read_for_write(self.writer, message)
        except Exception:  # a task's boundary: logged, answered
            logger.exception("read before a checked push failed")
            answer = _refused(message.get("id"), "internal error", UNAVAILABLE)
        reply = message.get("reply_channel")
        if isinstance(reply, str) and reply:
            await self.reply(reply, answer)

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            self.tasks.clear()
