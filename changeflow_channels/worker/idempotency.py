"""Idempotent pushes: pushes with one ``idempotency_key`` into one table are written once.

The record of each key lives in RethinkDB, in the table ``push_keys`` of the
project's own database ``changeflow_internal`` (``push_keys.py``; never
followed, streamed or written by clients, see ``names.py``), so it outlives
restarts of Redis, of the worker and of Daphne. A push with a key:

1. ``begin``: one query makes the key's record unless a fresh one exists: it
   is ``pending``, and holds the keys this worker chose for the documents
   without a primary key (and the field they go in) and the push's fingerprint.
2. A record found ``done``: the push was written, and its answer is the
   recorded one (with this push's ``id``). A record of a different push (same
   key, other fingerprint) is refused as ``invalid``.
3. Otherwise the documents are written, keyed as the record says. A record
   found ``pending`` means an earlier attempt may have landed (its worker died,
   or lost RethinkDB, between writing and completing; or another worker writes
   it now): the write is applied again so that it lands once: a document equal
   to ours under our recorded key is ours, and counts as ``inserted``.
4. ``complete``: the record becomes ``done`` with the answer, unless another
   attempt completed it first: then that answer is given. An answer
   ``unavailable`` (RethinkDB unreachable) leaves it pending, for the retry.

A record older than ``CHANGEFLOW_IDEMPOTENCY_WINDOW`` counts as absent; such
records are deleted in the background, at most ``EXPIRE_BATCH`` at a time,
at most once per ``EXPIRE_EVERY`` seconds while pushes with keys come.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from rethinkdb.errors import ReqlError

from ..pushes import (
    INVALID,
    REJECTED,
    RESULT_TYPE,
    UNAVAILABLE,
    PushError,
    PushRequest,
    error_result,
)
from ..rethink import LOST_PRIMARY, is_connection_error
from .push_keys import PENDING, Attempt

if TYPE_CHECKING:
    from .push_writer import PushWriter

logger = logging.getLogger(__name__)

FINAL_CODES = (REJECTED, INVALID)


class RecordsUnavailable(Exception):
    """RethinkDB could not be reached for the record until the push's deadline."""


def record_id(database: str, table: str, key: str) -> str:
    """The record's primary key (RethinkDB's are at most 127 bytes: a digest)."""
    text = json.dumps([database, table, key], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(request: PushRequest) -> str:
    """What makes a push the same push: its op, key and data as sent."""
    text = json.dumps(
        [request.op, request.key, request.data],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def keyed_as(request: PushRequest, pk: str, keys: list[Any]) -> PushRequest:
    """``request`` with ``keys`` given, in order, to the inserted documents without ``pk``."""
    if request.op != "insert":
        return request
    remaining = iter(keys)
    documents = []
    for doc in request.documents:
        if pk not in doc:
            key = next(remaining, None)
            if key is None:
                raise PushError("the push's record does not match its documents")
            doc = {**doc, pk: key}
        documents.append(doc)
    return replace(request, data=documents)


def new_record(
    writer: PushWriter, request: PushRequest
) -> tuple[dict[str, Any], PushRequest, list[Any]]:
    """The pending record of a first attempt at ``request``, and the request keyed as it says."""
    assert request.idempotency_key is not None
    keyed, generated = writer.with_keys(request)
    record = {
        "id": record_id(request.database, request.table, request.idempotency_key),
        "stream": request.stream,
        "key": request.idempotency_key,
        "at": time.time(),
        "state": PENDING,
        "fingerprint": fingerprint(request),
        "pk": writer.tables.known_primary_key(request.database, request.table) or "id",
        "generated": generated,
        "attempt": uuid.uuid4().hex,
    }
    return record, keyed, generated


async def write_once(writer: PushWriter, request: PushRequest, give_up: float) -> dict[str, Any]:
    """Write ``request`` (which has an ``idempotency_key``) once; its answer."""
    assert request.idempotency_key is not None
    keys = writer.push_keys
    keys.expire_soon()
    record, keyed, generated = new_record(writer, request)
    try:
        attempt = await with_records(writer, give_up, lambda conn: keys.begin(conn, record))
    except RecordsUnavailable as error:
        return error_result(request.id, f"{error}; push not written", UNAVAILABLE)
    return await finish(writer, request, record, attempt, keyed, generated, give_up)


async def finish(
    writer: PushWriter,
    request: PushRequest,
    record: dict[str, Any],
    attempt: Attempt,
    keyed: PushRequest,
    generated: list[Any],
    give_up: float,
) -> dict[str, Any]:
    """What follows ``begin``: the answer recorded, or the write and its record completed."""
    keys = writer.push_keys
    held = attempt.record
    if held["fingerprint"] != record["fingerprint"]:
        return error_result(
            request.id,
            f"idempotency_key {request.idempotency_key!r} was used for a different push "
            f"into {request.stream}",
            INVALID,
        )
    if attempt.done:
        return {"type": RESULT_TYPE, **held["result"], "id": request.id}
    if not attempt.created:
        logger.info(
            "push with idempotency_key %r into %s: an earlier attempt may have landed; "
            "writing it so that it lands once",
            request.idempotency_key,
            request.stream,
        )
        generated = list(held["generated"])
        try:
            keyed = keyed_as(request, held["pk"], generated)
        except PushError as error:
            return error_result(request.id, str(error), INVALID)
    answer = await writer.write_keyed(keyed, generated, retry=not attempt.created, give_up=give_up)
    if (
        attempt.created
        and answer.get("code") == REJECTED
        and request.op == "insert"
        and await _taken_over(writer, attempt, give_up)
    ):
        # Another copy of this push (another worker, a sender that did not wait) found
        # our record pending and may have written our documents first: ours, if equal.
        again = await writer.write_keyed(keyed, generated, retry=True, give_up=give_up)
        if again["ok"]:
            answer = again
    if answer["ok"] and request.op == "insert":
        count_ours_inserted(answer)
    if not answer["ok"] and answer.get("code") not in FINAL_CODES:
        return answer  # not written for now: the record stays pending, for the retry
    stored = {name: value for name, value in answer.items() if name not in ("type", "id")}
    try:
        final = await with_records(
            writer, give_up, lambda conn: keys.complete(conn, attempt, stored)
        )
    except RecordsUnavailable as error:
        logger.warning(
            "push with idempotency_key %r into %s written, its record not completed (%s): "
            "a retry writes it again, so that it lands once",
            request.idempotency_key,
            request.stream,
            error,
        )
        return answer
    return {"type": RESULT_TYPE, **final, "id": request.id}


async def _taken_over(writer: PushWriter, attempt: Attempt, give_up: float) -> bool:
    try:
        taken = lambda conn: writer.push_keys.taken_over(conn, attempt)  # noqa: E731
        return bool(await with_records(writer, give_up, taken))
    except RecordsUnavailable:
        return False  # the refusal stands


def count_ours_inserted(answer: dict[str, Any]) -> None:
    """An insert retried: a document found equal to ours under our key was our own
    earlier attempt (``unchanged``), so it counts as inserted."""
    if answer.get("unchanged"):
        answer["inserted"] += answer["unchanged"]
        answer["unchanged"] = 0


async def with_records(writer: PushWriter, give_up: float, work: Any) -> Any:
    """``work(conn)`` on the writer's connection, tried again while RethinkDB is
    unreachable or the records' table lost its primary (``LOST_PRIMARY``: a record
    written again is recognised, ``begin`` finds our own pending record ours and
    ``complete`` is an update), until ``give_up`` (``time.monotonic()``)."""
    delay = 0.1
    while True:
        conn = None
        try:
            conn = await writer.connection.get()
            return await work(conn)
        except (ReqlError, OSError, asyncio.TimeoutError) as error:
            lost_primary = isinstance(error, LOST_PRIMARY)
            if isinstance(error, ReqlError) and not (
                lost_primary or is_connection_error(error, conn)
            ):
                raise
            if not lost_primary:
                await writer.connection.discard()
            # The class only for a lost primary: its text quotes the query (records, answers).
            why = type(error).__name__ if lost_primary else error
            if time.monotonic() + delay > give_up:
                raise RecordsUnavailable(
                    f"RethinkDB unavailable for {writer.deadline:g} s: {why}"
                ) from error
            logger.warning(
                "RethinkDB unavailable (%s); retrying push's record in %.1f s", why, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
