"""Idempotent pushes: pushes with one ``idempotency_key`` into one table are written once.

The record of each key lives in RethinkDB, in the table ``push_keys`` of the
project's own database ``changeflow_internal`` (made on first use; never
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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from rethinkdb.errors import ReqlError, ReqlOpFailedError

from ..names import INTERNAL_DATABASE
from ..pushes import (
    INVALID,
    REJECTED,
    RESULT_TYPE,
    UNAVAILABLE,
    PushError,
    PushRequest,
    error_result,
)
from ..rethink import Reconnecting, is_connection_error
from ..tables.ddl import create_table

if TYPE_CHECKING:
    from .push_writer import PushWriter

logger = logging.getLogger(__name__)

DATABASE = INTERNAL_DATABASE
TABLE = "push_keys"
AT_INDEX = "at"
PENDING = "pending"
DONE = "done"
# Records deleted per expiry round, and the seconds between two rounds.
EXPIRE_BATCH = 1000
EXPIRE_EVERY = 60.0
QUERY_TIMEOUT = 5.0
# Answers recorded for good: a retry gets the same one. ``unavailable`` is not.
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


@dataclass(frozen=True)
class Attempt:
    """One push's record as ``begin`` left it."""

    record: dict[str, Any]
    created: bool  # by this attempt (else found: done, or pending from an earlier one)

    @property
    def done(self) -> bool:
        return self.record.get("state") == DONE


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


class PushKeys:
    """The records of idempotency keys, in RethinkDB."""

    def __init__(self, connection: Reconnecting, window: float) -> None:
        self.connection = connection
        self.r = connection.r
        self.window = window
        self._ready = False
        self._making = asyncio.Lock()  # one ensure() at a time: racing creates make two tables
        self._next_expiry = 0.0
        self._expiring: asyncio.Task[int] | None = None

    @property
    def table(self) -> Any:
        return self.r.db(DATABASE).table(TABLE)

    async def ensure(self, conn: Any) -> None:
        """The records' table and its index on ``at`` (made once, by whoever comes first)."""
        async with self._making:
            if not self._ready:
                await self._make(conn)

    async def _make(self, conn: Any) -> None:
        await create_table(self.r, conn, DATABASE, TABLE)
        if AT_INDEX not in await self.table.index_list().run(conn):
            try:
                await self.table.index_create(AT_INDEX).run(conn)
            except ReqlOpFailedError:
                if AT_INDEX not in await self.table.index_list().run(conn):
                    raise
        await self.table.index_wait(AT_INDEX).run(conn)
        self._ready = True

    async def _run(self, conn: Any, query: Any) -> Any:
        """``query``, making the table first when it is missing (or was lost)."""
        if not self._ready:
            await asyncio.wait_for(self.ensure(conn), QUERY_TIMEOUT * 4)
        try:
            return await asyncio.wait_for(query.run(conn), QUERY_TIMEOUT)
        except ReqlOpFailedError:
            self._ready = False  # a RethinkDB that lost its data: make it again
            await asyncio.wait_for(self.ensure(conn), QUERY_TIMEOUT * 4)
            return await asyncio.wait_for(query.run(conn), QUERY_TIMEOUT)

    async def begin(self, conn: Any, record: dict[str, Any]) -> Attempt:
        """``record`` stored unless a fresh record of its key exists; the one that holds."""
        return (await self.begin_many(conn, [record]))[record["id"]]

    async def begin_many(self, conn: Any, records: list[dict[str, Any]]) -> dict[str, Attempt]:
        """``begin`` of records of distinct keys, in one query; by record id."""
        r = self.r
        window = self.window
        query = self.table.insert(
            records,
            conflict=lambda _id, old, new: r.branch(
                old["at"].lt(new["at"].sub(window)),
                new,
                old["state"].eq(PENDING),
                # Another copy takes the push over: say so, for the first one's write.
                old.merge({"copies": old["copies"].default(0).add(1)}),
                old,
            ),
            return_changes="always",
        )
        result = await self._run(conn, query)
        if result.get("errors"):
            raise ReqlOpFailedError(result.get("first_error", "a push's record was refused"))
        attempts = {record["id"]: record["attempt"] for record in records}
        held: dict[str, Attempt] = {}
        for change in result.get("changes") or []:
            record = change.get("new_val") or {}
            if record.get("id") in attempts:
                held[record["id"]] = Attempt(
                    record, record.get("attempt") == attempts[record["id"]]
                )
        missing = set(attempts) - set(held)
        if missing:
            raise ReqlOpFailedError(f"{len(missing)} push records not returned")
        return held

    async def taken_over(self, conn: Any, attempt: Attempt) -> bool:
        """Whether another copy of the push found its record pending since ``attempt``."""
        held = await self._run(conn, self.table.get(attempt.record["id"]))
        return (
            bool(held)
            and held.get("fingerprint") == attempt.record["fingerprint"]
            and (
                held.get("copies", 0) > attempt.record.get("copies", 0) or held.get("state") == DONE
            )
        )

    async def complete(self, conn: Any, attempt: Attempt, answer: dict[str, Any]) -> dict[str, Any]:
        """Record ``answer``; the answer recorded (another attempt's, if it was first)."""
        held = (await self.complete_many(conn, [(attempt, answer)])).get(attempt.record["id"])
        if not held or held.get("state") != DONE or "result" not in held:
            return answer  # expired and deleted meanwhile: ours stands
        return dict(held["result"])

    async def complete_many(
        self, conn: Any, entries: list[tuple[Attempt, dict[str, Any]]]
    ) -> dict[str, dict[str, Any]]:
        """Record each attempt's answer, in one query, unless its record is done already
        (or is another push's now); the records as they are then, by id."""
        r = self.r
        fingerprints = {
            attempt.record["id"]: attempt.record["fingerprint"] for attempt, _ in entries
        }
        answers = {attempt.record["id"]: answer for attempt, answer in entries}
        query = self.table.get_all(*fingerprints).update(
            lambda rec: r.branch(
                rec["state"]
                .eq(PENDING)
                .and_(rec["fingerprint"].eq(r.expr(fingerprints)[rec["id"]])),
                {"state": DONE, "result": r.expr(answers)[rec["id"]]},
                {},
            ),
            return_changes="always",
        )
        result = await self._run(conn, query)
        held: dict[str, dict[str, Any]] = {}
        for change in result.get("changes") or []:
            record = change.get("new_val")
            if record and record.get("id") in answers:
                held[record["id"]] = record
        return held

    def expire_soon(self) -> None:
        """Delete expired records in the background (bounded, not too often)."""
        now = time.monotonic()
        if now < self._next_expiry or (self._expiring is not None and not self._expiring.done()):
            return
        self._next_expiry = now + min(EXPIRE_EVERY, self.window)
        self._expiring = asyncio.ensure_future(self._expire_logged())

    async def _expire_logged(self) -> int:
        try:
            return await self.expire(time.time())
        except Exception as error:  # the expiry task's boundary: logged, tried again later
            logger.warning("expired idempotency keys not deleted: %r", error)
            return 0

    async def expire(self, now: float) -> int:
        """Delete at most ``EXPIRE_BATCH`` records older than the window; how many went."""
        r = self.r
        conn = await self.connection.get()
        cutoff = now - self.window
        # Deleted only if still expired when deleted: a record made again meanwhile stays.
        query = (
            self.table.between(r.minval, cutoff, index=AT_INDEX)
            .limit(EXPIRE_BATCH)
            .replace(lambda rec: r.branch(rec["at"].lt(cutoff), None, rec))
        )
        deleted = int((await self._run(conn, query)).get("deleted", 0))
        if deleted >= EXPIRE_BATCH:
            self._next_expiry = 0.0  # more to do: the next push with a key goes on
        if deleted:
            logger.info("deleted %d expired idempotency keys", deleted)
        return deleted


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
        and await with_records(writer, give_up, lambda conn: keys.taken_over(conn, attempt))
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


def count_ours_inserted(answer: dict[str, Any]) -> None:
    """An insert retried: a document found equal to ours under our key was our own
    earlier attempt (``unchanged``), so it counts as inserted."""
    if answer.get("unchanged"):
        answer["inserted"] += answer["unchanged"]
        answer["unchanged"] = 0


async def with_records(writer: PushWriter, give_up: float, work: Any) -> Any:
    """``work(conn)`` on the writer's connection, tried again while RethinkDB is
    unreachable, until ``give_up`` (``time.monotonic()``)."""
    delay = 0.1
    while True:
        conn = None
        try:
            conn = await writer.connection.get()
            return await work(conn)
        except (ReqlError, OSError, asyncio.TimeoutError) as error:
            if isinstance(error, ReqlError) and not is_connection_error(error, conn):
                raise
            await writer.connection.discard()
            if time.monotonic() + delay > give_up:
                raise RecordsUnavailable(
                    f"RethinkDB unavailable for {writer.deadline:g} s: {error}"
                ) from error
            logger.warning(
                "RethinkDB unavailable (%s); retrying push's record in %.1f s", error, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
