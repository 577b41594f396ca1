"""Changefeeds of the ReQL test server (``.changes()``).

A :class:`ChangeFeed` is built by the ``changes`` term, may get stream
transforms chained after it (``changes().filter(...)``, ``.map(...)``, ``['new_val']``),
and is started by the engine once the query is evaluated: starting takes the
initial snapshot and subscribes to the table in one synchronous step, so no
change is lost or duplicated between the initial values and the changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rethinkdb.ql2_pb2 import Response

from .reql_datum import reql_eq, sort_key
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError, ReqlServerError
from .reql_eval import Ctx, SingleSel, Stream, T, as_bool, as_int, handler, kind_of
from .reql_store import FeedSource

logger = logging.getLogger(__name__)

Note = Response.ResponseNote
DEFAULT_QUEUE_SIZE = 100_000

Step = Callable[[Any], Any]  # document -> transformed document, or None when filtered out


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
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self.source = source
        self.point = point
        self._key = sort_key(key) if point else None
        self._pk_value = key
        self.steps = steps or []
        self.post: list[Callable[[dict], Any]] = []  # transforms chained after changes()
        self.include_initial = include_initial
        self.include_states = include_states
        self.include_types = include_types
        self.queue_size = queue_size
        self.notes: list[int] = [Note.ATOM_FEED if point else Note.SEQUENCE_FEED]
        if include_states:
            self.notes.append(Note.INCLUDES_STATES)
        self._head: list[Any] = []  # state documents and initial values
        self._changes: list[Any] = []
        self._skipped = 0
        self._error: str | None = None
        self._closed = False
        self._started = False
        self._event = asyncio.Event()

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        """Snapshot the initial values and subscribe, atomically (no await in between)."""
        if self._started:
            return
        self._started = True
        if self.include_states and self.include_initial:
            self._head.append(self._state("initializing"))
        if self.include_initial:
            if self.point:
                docs = [self.source.get(self._pk_value)]
            else:
                docs = [d for d in map(self._transform, self.source.scan()) if d is not None]
            for doc in docs:
                initial: dict[str, Any] = {"new_val": doc}
                if self.include_types:
                    initial["type"] = "initial"
                item = self._apply_post(initial)
                if item is not None:
                    self._head.append(item)
        if self.include_states:
            self._head.append(self._state("ready"))
        self.source.subscribe(self, self._key)

    def _state(self, state: str) -> dict[str, str]:
        return {"state": state, "type": "state"} if self.include_types else {"state": state}

    def close(self) -> None:
        """Stop the feed (idempotent); a pending ``next_batch`` returns []."""
        if not self._closed:
            self._closed = True
            self.source.unsubscribe(self, self._key)
            self._event.set()

    def abort(self, message: str) -> None:
        """Make the next ``next_batch`` raise ``ReqlOpFailedError(message)``."""
        if self._error is None and not self._closed:
            self._error = message
            self.source.unsubscribe(self, self._key)
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

    def _apply_post(self, item: Any) -> Any:
        for fn in self.post:
            try:
                item = fn(item)
            except ReqlServerError as exc:
                logger.debug("changefeed transform failed, change skipped: %s", exc)
                return None
            if item is None:
                return None
        return item

    def push(self, old: Any, new: Any) -> None:
        """Called by the table for each change of a write, before the write returns."""
        if self.steps:
            old = self._transform(old) if old is not None else None
            new = self._transform(new) if new is not None else None
            if old is None and new is None:
                return
            if old is not None and new is not None and reql_eq(old, new):
                return
        item: dict[str, Any] = {"new_val": new, "old_val": old}
        if self.include_types:
            item["type"] = "add" if old is None else "remove" if new is None else "change"
        if self.post:
            item = self._apply_post(item)
            if item is None:
                return
        changes = self._changes
        changes.append(item)
        if len(changes) > self.queue_size:
            # As the real server: drop everything buffered and report how much.
            self._skipped += len(changes)
            changes.clear()
        self._event.set()

    # -- delivery ---------------------------------------------------------------------

    def _drain(self) -> list[Any]:
        out, self._head = self._head, []
        if self._skipped:
            out.append(
                {
                    "error": "Changefeed cache over array size limit, "
                    f"skipped {self._skipped} elements."
                }
            )
            self._skipped = 0
        elif self._changes:
            out.extend(self._changes)
            self._changes = []
        return out

    def first_batch(self) -> list[Any]:
        """What is ready now: state documents, initial values, queued changes."""
        return self._drain()

    async def next_batch(self) -> list[Any]:
        """Wait for at least one item; raises once aborted; [] once closed."""
        while True:
            if self._error is not None:
                raise ReqlOpFailedError(self._error)
            if self._closed:
                return []
            if self._head or self._changes or self._skipped:
                return self._drain()
            self._event.clear()
            await self._event.wait()


def _flag(opts: dict, name: str) -> bool:
    return as_bool(opts[name]) if name in opts else False


@handler(T.CHANGES, 1)
def changes(ctx: Ctx, args: list, opts: dict, scope: dict) -> ChangeFeed:
    target = args[0]
    queue_size = as_int(
        opts.get("changefeed_queue_size")
        or ctx.global_opt("changefeed_queue_size", DEFAULT_QUEUE_SIZE)
    )
    common: dict[str, Any] = {
        "include_initial": _flag(opts, "include_initial"),
        "include_states": _flag(opts, "include_states"),
        "include_types": _flag(opts, "include_types"),
        "queue_size": queue_size,
    }
    if isinstance(target, SingleSel):
        return ChangeFeed(target.table, target.key, point=True, **common)
    if isinstance(target, Stream) and target.table is not None and target.steps is not None:
        return ChangeFeed(target.table, steps=list(target.steps), **common)
    if isinstance(target, ChangeFeed):
        raise ReqlQueryLogicError("Cannot call `changes` on a changefeed.")
    raise ReqlQueryLogicError(
        f"Cannot call `changes` on a value of type {kind_of(target)} "
        "(only on a table, a get, or a selection of one table)."
    )
