"""A round of pushes, before anything is written: each message checked and its
documents keyed (``Received``), and the round's plan (``plan``): which pushes go
together as one insert query and which alone, in an order that keeps each
table's pushes, and each sender's, in the order received. See
``push_batches`` for why a group holds at most one push per sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from rethinkdb.errors import ReqlError

from ..pushes import (
    INVALID,
    PUSH_TYPE,
    PushError,
    PushRequest,
    check_size,
    error_result,
    parse_push,
)
from .push_keys import Attempt
from .push_writer import WRITE_TIMEOUT, PushWriter

logger = logging.getLogger(__name__)

# One group's insert stays far from RethinkDB's limits and the write timeout.
GROUP_DOCUMENTS = 1_000
GROUP_BYTES = 1 << 20


@dataclass
class Received:
    """One message of the push channel, on its way to its answer."""

    message: dict[str, Any]
    request: PushRequest | None = None  # keyed; None when refused before writing
    generated: list[Any] = field(default_factory=list)
    size: int = 0
    groupable: bool = False
    result: dict[str, Any] | None = None
    # A keyed push recorded with the round's others (idempotent_rounds.py).
    attempt: Attempt | None = None
    # The ``changeflow.push.batch`` it came in (a number of the worker's), if any: the
    # pushes of one batch were sent at one moment, none waiting for another.
    batch: int | None = None


def receive(
    message: dict[str, Any], writer: PushWriter, max_bytes: int, batch: int | None = None
) -> Received:
    """Check ``message`` and give its documents their keys (before any attempt)."""
    item = Received(message, batch=batch)
    kind = message.get("type")
    if kind != PUSH_TYPE:
        item.result = error_result(message.get("id"), f"unknown message type {kind!r}", INVALID)
        return item
    try:
        request = parse_push(message)
        item.size = check_size(request.data, max_bytes)
    except PushError as error:
        item.result = error_result(message.get("id"), str(error), INVALID)
        return item
    if request.idempotency_key is not None:
        item.request = request  # keyed as its record says, written alone (idempotency.py)
        return item
    item.request, item.generated = writer.with_keys(request)
    item.groupable = (
        request.op == "insert"
        # Keys of ours are the table's keys only if we know its primary key.
        and writer.tables.known_primary_key(request.database, request.table) is not None
        and len(item.generated) == len(item.request.documents)
    )
    return item


async def learn_primary_keys(
    writer: PushWriter, items: list[Received], max_bytes: int
) -> list[Received]:
    """``items``, those inserted into a table whose primary key is not known yet
    keyed again once it is (looked up when the table has several in the round:
    only then does grouping pay). A table that is missing, or RethinkDB being
    unreachable, leaves them as they were: written one by one."""
    counts: dict[tuple[str, str], int] = {}
    for item in items:
        request = item.request
        if request is not None and request.op == "insert" and not item.groupable:
            where = (request.database, request.table)
            if writer.tables.known_primary_key(*where) is None:
                counts[where] = counts.get(where, 0) + 1
    unknown = [where for where, count in counts.items() if count > 1]
    if not unknown:
        return items
    try:
        conn = await writer.connection.get()
        for database, table in unknown:
            with contextlib.suppress(ReqlError):  # a missing table: the first push creates it
                await asyncio.wait_for(
                    writer.tables.primary_key(conn, database, table), WRITE_TIMEOUT
                )
    except (ReqlError, OSError, asyncio.TimeoutError) as error:
        # RethinkDB unreachable: the writes that follow will retry, or answer the error.
        logger.debug("primary keys not looked up: %r", error)
    return [
        receive(item.message, writer, max_bytes, item.batch)
        if item.request is not None and (item.request.database, item.request.table) in unknown
        else item
        for item in items
    ]


@dataclass
class Group:
    items: list[Received]
    documents: int
    size: int
    # The reply channels of its pushes (None: pushes without one, one sender), each
    # with the batch its pushes came in (None: a push alone).
    senders: dict[str | None, int | None] = field(default_factory=dict)

    def takes(self, item: Received, count: int) -> bool:
        """Whether ``item`` (of ``count`` documents) may join: within the limits, and
        no second push of one sender (RethinkDB writes the documents of one
        insert in no particular order), unless both came in one batch (sent at one
        moment: no order among them to keep)."""
        assert item.request is not None
        sender = item.request.reply_channel
        return (
            (
                sender not in self.senders
                or (item.batch is not None and self.senders[sender] == item.batch)
            )
            and self.documents + count <= GROUP_DOCUMENTS
            and self.size + item.size <= GROUP_BYTES
        )

    def add(self, item: Received, count: int) -> None:
        assert item.request is not None
        self.items.append(item)
        self.documents += count
        self.size += item.size
        self.senders[item.request.reply_channel] = item.batch


def plan(items: list[Received]) -> list[Group]:
    """The round's writes, in order: groups of groupable inserts into one table
    (within ``GROUP_DOCUMENTS`` and ``GROUP_BYTES``, one push per sender), and
    single pushes. A table's pushes keep their order: anything else for that
    table, or a second push of a sender in the group, closes its group."""
    groups: list[Group] = []
    open_groups: dict[tuple[str, str], Group] = {}
    for item in items:
        request = item.request
        if request is None:
            continue  # refused: nothing to write
        where = (request.database, request.table)
        count = len(request.documents)
        if not item.groupable:
            open_groups.pop(where, None)
            groups.append(Group([item], count, item.size))
            continue
        group = open_groups.get(where)
        if group is None or not group.takes(item, count):
            group = open_groups[where] = Group([], 0, 0)
            groups.append(group)
        group.add(item, count)
    return groups
