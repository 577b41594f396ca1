"""The records of idempotency keys, in RethinkDB: ``changeflow_internal.push_keys``.

One document per (table, key): ``pending`` while its push is being written (with
the keys chosen for its documents), then ``done`` with the push's answer
(``idempotency.py`` says what each step means). The table and its index on
``at`` are made on first use (and again if RethinkDB lost them), with a replica on
each server up to three (on a cluster, losing one server must not stop every push
with a key); records older than the window are deleted in the background, in
bounded rounds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from rethinkdb.errors import ReqlOpFailedError

from ..names import INTERNAL_DATABASE
from ..rethink import Reconnecting
from ..tables.ddl import create_table

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
# Replicas of the records' table when the worker makes it (fewer servers: one on each).
REPLICAS = 3


@dataclass(frozen=True)
class Attempt:
    """One push's record as ``begin`` left it."""

    record: dict[str, Any]
    created: bool  # by this attempt (else found: done, or pending from an earlier one)

    @property
    def done(self) -> bool:
        return self.record.get("state") == DONE


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
        # As many replicas as the cluster can hold, up to REPLICAS: RethinkDB refuses more
        # than it has servers (asking it how many needs a user allowed to read the system
        # tables, which the bridge's own user need not be).
        for replicas in range(REPLICAS, 0, -1):
            try:
                await create_table(self.r, conn, DATABASE, TABLE, replicas=replicas)
                break
            except ReqlOpFailedError:
                if replicas == 1:
                    raise
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

    async def answered(self, conn: Any, record_id: str, fingerprint: str) -> dict[str, Any] | None:
        """The recorded answer of a fresh ``done`` record of this push, or None."""
        held = await self._run(conn, self.table.get(record_id))
        if (
            not held
            or held.get("state") != DONE
            or held.get("fingerprint") != fingerprint
            or held.get("at", 0) < time.time() - self.window
            or "result" not in held
        ):
            return None
        return dict(held["result"])

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

    def close(self) -> None:
        """Stop the expiry round still running (shutting down)."""
        if self._expiring is not None:
            self._expiring.cancel()

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
