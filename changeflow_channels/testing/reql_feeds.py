"""Changefeeds of the ReQL test server (``.changes()``).

A :class:`ChangeFeed` is built by the ``changes`` term (``reql_feeds_term``), may
get stream transforms chained after it (``changes().filter(...)``, ``.map(...)``,
``['new_val']``, ``.limit(n)``), and is started by the engine once the query is
evaluated: starting takes the initial snapshot and subscribes to the table in one
synchronous step, so no change is lost or duplicated between the initial values
and the changes.

Changes are queued as raw ``(old, new)`` pairs; the transforms chained after
``changes()`` run when a batch is delivered. An error in one of them ends the feed
with that error (after the items before it), as on the real server; a document
the transforms before ``changes()`` fail on is left out. ``squash`` merges the
queued changes of one primary key (``True``: what is queued when the client
reads; a number: for that many seconds after the first change).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from rethinkdb.ql2_pb2 import Response

from .reql_datum import reql_eq, sort_key
from .reql_errors import ReqlOpFailedError, ReqlServerError
from .reql_store import FeedSource

logger = logging.getLogger(__name__)

Note = Response.ResponseNote
DEFAULT_QUEUE_SIZE = 100_000

Step = Callable[[Any], Any]  # document -> transformed document, or None when filtered out
Pair = tuple[Any, ...]  # (old_val, new_val), or with (old_offset, new_offset) after them


class Limit:
    """``.limit(n)`` chained after ``changes()``: the feed ends after ``n`` items."""

    def __init__(self, count: int) -> None:
        self.remaining = count


class Skip:
    """``.skip(n)`` chained after ``changes()``: the first ``n`` items are left out."""

    def __init__(self, count: int) -> None:
        self.remaining = count


class ChangeFeed:
    """An open changefeed; implements the ``Feed`` protocol of ``reql_results``."""

    def __init__(
        self,
        source: FeedSource,
        key: Any = None,
        *,
        point: bool = False,
        steps: list[Step] | None = None,
        include_initial: bool = False,
        include_states: bool = False,
        include_types: bool = False,
        include_offsets: bool = False,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        squash: bool | float = False,
    ) -> None:
        self.source = source
        self.job_id = str(uuid.uuid4())  # its row in rethinkdb.jobs
        self.started = time.monotonic()
        self.point = point
        self._key = sort_key(key) if point else None
        self._pk_value = key
        self.steps = steps or []
        # Transforms chained after changes(), in order; a Limit counts the items.
        self.post: list[Callable[[Any], Any] | Limit | Skip] = []
        self.include_initial = include_initial
        self.include_states = include_states
        self.include_types = include_types
        self.include_offsets = include_offsets  # top-n feeds: positions in the top n
        self.queue_size = queue_size
        self.squash = squash
        self.notes: list[int] = [Note.ATOM_FEED if point else Note.SEQUENCE_FEED]
        if include_states:
            self.notes.append(Note.INCLUDES_STATES)
        self.done = False  # the feed has delivered its last item (limit reached)
        self._head: list[Any] = []  # state documents and initial values, transformed
        self._pending: list[Pair] = []
        self._squashed: dict[tuple, list[Any]] = {}
        self._due: float | None = None  # when squashed changes may go out (numeric squash)
        self._flush = False  # squashed changes go out now (the queue is half full)
        self._skipped = 0
        self._error: str | None = None
        self._failure: ReqlServerError | None = None  # a transform's error, raised next
        self._closed = False
        self._started = False
        self._event = asyncio.Event()

    # -- life cycle -------------------------------------------------------------------

    def limit(self, count: int) -> ChangeFeed:
        self.post.append(Limit(count))
        return self

    def skip(self, count: int) -> ChangeFeed:
        self.post.append(Skip(count))
        return self

    def start(self) -> None:
        """Snapshot the initial values and subscribe, atomically (no await in between)."""
        if self._started:
            return
        self._started = True
        if self._limit_reached():
            self.done = True
            return
        head: list[Any] = []
        if self.include_states and self.include_initial:
            head.append(self._state("initializing"))
        if self.include_initial:
            for offset, doc in enumerate(self.initial_values()):
                initial: dict[str, Any] = {"new_val": doc}
                if self.include_offsets:
                    initial["new_offset"] = offset
                if self.include_types:
                    initial["type"] = "initial"
                head.append(initial)
        if self.include_states:
            head.append(self._state("ready"))
        # Transforms run now: an error in them fails the query itself.
        self._head = self._deliver(head, raise_now=True)
        if not self.done:
            self.subscribe()

    def initial_values(self) -> list[Any]:
        if self.point:
            return [self.source.get(self._pk_value)]
        return [d for d in map(self._transform, self.source.scan()) if d is not None]

    def subscribe(self) -> None:
        self.source.subscribe(self, self._key)

    def unsubscribe(self) -> None:
        self.source.unsubscribe(self, self._key)

    def _state(self, state: str) -> dict[str, str]:
        return {"state": state, "type": "state"} if self.include_types else {"state": state}

    def _limit_reached(self) -> bool:
        return any(isinstance(s, Limit) and s.remaining <= 0 for s in self.post)

    def close(self) -> None:
        """Stop the feed (idempotent); a pending ``next_batch`` returns []."""
        if not self._closed:
            self._closed = True
            self.unsubscribe()
            self._event.set()

    def abort(self, message: str) -> None:
        """Make the next ``next_batch`` raise ``ReqlOpFailedError(message)``."""
        if self._error is None and not self._closed:
            self._error = message
            self.unsubscribe()
            self._event.set()

    # -- changes ------------------------------------------------------------------------

    def _transform(self, doc: Any) -> Any:
        for step in self.steps:
            if doc is None:
                return None
            try:
                doc = step(doc)
            except ReqlServerError:
                return None
        return doc

    def push(self, old: Any, new: Any) -> None:
        """Called by the table for each change of a write, before the write returns."""
        if self.done or self._closed:
            return
        key = self._key
        if self.squash is not False and key is None:
            row = new if new is not None else old
            key = sort_key(row.get(self.source.primary_key)) if isinstance(row, dict) else ()
        if self.steps:
            old = self._transform(old) if old is not None else None
            new = self._transform(new) if new is not None else None
            if old is None and new is None:
                return
            if old is not None and new is not None and reql_eq(old, new):
                return
        self.queue(old, new, key)

    def queue(self, old: Any, new: Any, key: tuple | None = None) -> None:
        """Queue one change for delivery (squashed by ``key`` when squashing)."""
        if self.squash is not False:
            squashed = self._squashed
            entry = squashed.get(key or ())
            if entry is None:
                squashed[key or ()] = [old, new]
            else:
                entry[1] = new
            if len(squashed) > self.queue_size:
                self._skipped += len(squashed)
                squashed.clear()
            elif len(squashed) > self.queue_size // 2:
                # As the real server: a queue half full goes out without waiting
                # for the end of the squash delay.
                self._flush = True
                self._event.set()
                return
            if self.squash is not True and self._due is None and self.squash > 0:
                loop = asyncio.get_running_loop()
                self._due = loop.time() + float(self.squash)
                loop.call_later(float(self.squash), self._event.set)
                return
            self._event.set()
            return
        self.queue_pair((old, new))

    def queue_pair(self, pair: Pair) -> None:
        """Queue one change as it goes out (no squashing)."""
        pending = self._pending
        pending.append(pair)
        if len(pending) > self.queue_size:
            # As the real server: drop everything buffered and report how much.
            self._skipped += len(pending)
            pending.clear()
        self._event.set()

    def take_pending(self) -> list[Pair]:
        """The changes ready to go out now, oldest first."""
        if self.squash is False:
            pairs, self._pending = self._pending, []
            return pairs
        if (
            self._due is not None
            and not self._flush
            and asyncio.get_running_loop().time() < self._due
        ):
            return []
        self._due = None
        self._flush = False
        merged = list(self._squashed.values())
        self._squashed.clear()
        return [
            (old, new)
            for old, new in merged
            if not (old is None and new is None)
            and not (old is not None and new is not None and reql_eq(old, new))
        ]

    def has_pending(self) -> bool:
        return bool(self._pending or self._squashed)

    def _item(
        self, old: Any, new: Any, old_offset: int | None = None, new_offset: int | None = None
    ) -> dict[str, Any]:
        item: dict[str, Any] = {"new_val": new, "old_val": old}
        if self.include_offsets:
            item["old_offset"], item["new_offset"] = old_offset, new_offset
        if self.include_types:
            item["type"] = "add" if old is None else "remove" if new is None else "change"
        return item

    # -- delivery ---------------------------------------------------------------------

    def _deliver(self, items: list[Any], *, raise_now: bool = False) -> list[Any]:
        """Run the transforms chained after changes() over ``items``; stop at the
        limit. A transform's error is raised at once (``raise_now``) or once the
        items before it are delivered."""
        if not self.post:
            return items
        out: list[Any] = []
        for item in items:
            if self.done:
                break
            value = item
            try:
                for step in self.post:
                    if isinstance(step, Limit):
                        step.remaining -= 1
                        if step.remaining <= 0:
                            self.done = True
                        continue
                    if isinstance(step, Skip):
                        if step.remaining > 0:
                            step.remaining -= 1
                            value = None
                            break
                        continue
                    value = step(value)
                    if value is None:
                        break
            except ReqlServerError as exc:
                if raise_now or not out:
                    raise
                self._failure = exc
                break
            if value is not None:
                out.append(value)
        if self.done:
            self.unsubscribe()
        return out

    def _drain(self) -> list[Any]:
        out, self._head = self._head, []
        if self.done:
            return out
        if self._skipped:
            out.append(
                {
                    "error": "Changefeed cache over array size limit, "
                    f"skipped {self._skipped} elements."
                }
            )
            self._skipped = 0
            return out
        pairs = self.take_pending()
        if pairs:
            out.extend(self._deliver([self._item(*pair) for pair in pairs]))
        return out

    def first_batch(self) -> list[Any]:
        """What is ready now: state documents, initial values, queued changes."""
        return self._drain()

    async def next_batch(self) -> list[Any]:
        """Wait for at least one item; raises once aborted; [] once closed or done."""
        while True:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                self.done = True
                raise failure
            if self._error is not None:
                raise ReqlOpFailedError(self._error)
            if self._closed or self.done:
                return []
            if self._head or self._skipped or self.has_pending():
                out = self._drain()
                if out or self.done:
                    return out
            self._event.clear()
            await self._event.wait()
