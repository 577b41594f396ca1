"""The worker's pushes, written in rounds, several per query where that is free.

Each round takes every push waiting (received, in order). Consecutive inserts
into one table whose documents all got keys of ours (none carried its own
primary key) become one insert query; everything else is written alone, as
before. With every key a fresh UUID, no document of such a group can collide
with anything: one query answers for all of them exactly as separate queries
would (each push: its documents ``inserted``, its own ``generated_keys``). Any
doubt (an error, a lost connection, a timeout) sends the group's pushes back to
the one-by-one path with its retry rules; there, a document found equal to ours
under our fresh key can only be the group's attempt, and counts as inserted.
Pushes with an ``idempotency_key``: the round's inserts whose documents all get
keys of ours are recorded together, and grouped as any other
(``idempotent_rounds.py``); any other is written alone, as its record in
RethinkDB says (``idempotency.py``).

What a round becomes (checked items, groups) is planned in ``push_plan.py``.

Order: a table's pushes are written in the order received. RethinkDB writes
the documents of one insert query in no particular order (a real server's
changefeed shows them shuffled), so a group holds at most one push of each
sender (reply channel; the pushes without one count as one sender): the next
push of a sender goes into the next group, written after. A group takes a
table's later inserts along, so pushes into *other* tables received in between
may be written after them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from rethinkdb.errors import ReqlError

from .. import metrics
from ..pushes import (
    RESULTS_TYPE,
    UNAVAILABLE,
    error_result,
)
from ..rethink import is_connection_error
from .feed_gate import FEED_NOT_READY
from .idempotency import count_ours_inserted, write_once
from .idempotent_rounds import begin_round, complete_round
from .push_plan import Received, learn_primary_keys, plan, receive
from .push_writer import PushWriter, push_result

logger = logging.getLogger(__name__)

# Pushes the worker holds, received from Redis and not yet written: it pops no
# more until some are written (the rest wait in Redis, for any worker). A worker
# that is SIGKILLed loses these (their senders get no answer).
IN_FLIGHT = 500
# Messages one pop from Redis may take.
POP_BATCH = 100

# Sends an answer; whether it was sent (a failure is logged, never raised).
SendReply = Callable[[str, dict[str, Any]], Awaitable[bool]]


class PushWindow:
    """How many more messages the worker may take from its push channel."""

    def __init__(self, size: int = IN_FLIGHT) -> None:
        self.free = size
        self.room = asyncio.Event()
        self.room.set()

    def take(self, most: int) -> int:
        """Take up to ``most`` places (0 when there is no room)."""
        taken = min(self.free, most)
        self.free -= taken
        if self.free <= 0:
            self.room.clear()
        return taken

    def hold(self, count: int) -> None:
        """Take ``count`` more places, room or not (the pushes of a batch taken as one)."""
        self.free -= count
        if self.free <= 0:
            self.room.clear()

    def release(self, count: int) -> None:
        self.free += count
        if self.free > 0:
            self.room.set()


async def write_round(writer: PushWriter, items: list[Received]) -> None:
    """Write the round's pushes; every item gets its ``result``."""
    await begin_round(writer, items)
    for group in plan(items):
        if len(group.items) > 1:
            await _write_group(writer, group.items)
        else:
            await _write_one(writer, group.items[0])
    await complete_round(writer, items)


async def _write_one(
    writer: PushWriter, item: Received, *, retry: bool = False, give_up: float | None = None
) -> None:
    assert item.request is not None
    try:
        if item.request.idempotency_key is not None and item.attempt is None:
            deadline = time.monotonic() + writer.deadline if give_up is None else give_up
            item.result = await write_once(writer, item.request, deadline)
            return
        # A keyed push recorded with the round: only its own attempt uses its fresh keys.
        retry = retry or item.attempt is not None
        item.result = await writer.write_keyed(
            item.request, item.generated, retry=retry, give_up=give_up
        )
    except Exception as error:  # a bug of ours must not lose the next pushes, nor the answer
        logger.exception("push to %s failed", item.request.stream)
        item.result = error_result(item.request.id, f"internal error: {error!r}", UNAVAILABLE)


async def _write_group(writer: PushWriter, items: list[Received]) -> None:
    first = items[0].request
    assert first is not None
    documents = [doc for item in items if item.request for doc in item.request.documents]
    give_up = time.monotonic() + writer.deadline
    try:
        conn = await writer.connection.get()
        if not await writer.feed_gate.open(conn, first.database, first.table, give_up):
            for item in items:
                assert item.request is not None
                item.result = error_result(item.request.id, FEED_NOT_READY, UNAVAILABLE)
            return
        counts: dict[str, Any] | None = await writer.insert_once(
            first.database, first.table, documents
        )
    except (ReqlError, OSError, asyncio.TimeoutError) as error:
        if is_connection_error(error):
            await writer.connection.discard()
        # The error's class only: a query error's text quotes the documents.
        logger.warning(
            "insert of %d pushes into %s failed (%s); writing them one by one",
            len(items),
            first.stream,
            type(error).__name__,
        )
        counts = None
    if counts is not None and not counts.get("errors") and counts.get("inserted") == len(documents):
        writer.written.add((first.database, first.table))
        logger.debug("%d pushes into %s written by one insert", len(items), first.stream)
        for item in items:
            assert item.request is not None
            inserted = {"inserted": len(item.request.documents)}
            item.result = push_result(item.request, inserted, item.generated)
        return
    if counts is not None:
        # Counts only: RethinkDB's ``first_error`` may quote a stored document.
        logger.warning(
            "insert of %d pushes into %s: %s of %d inserted, %s refused; writing them one by one",
            len(items),
            first.stream,
            counts.get("inserted"),
            len(documents),
            counts.get("errors"),
        )
    # The group may have landed in full or in part: retry rules recognise ours.
    for item in items:
        await _write_one(writer, item, retry=True, give_up=give_up)
        if item.result is not None and item.result["ok"]:
            count_ours_inserted(item.result)  # under a fresh key of ours: ours


class PushPipeline:
    """The push consumer's messages, in order: written in rounds, each answered.

    A round takes every message waiting (at most ``IN_FLIGHT``); its answers
    are sent (one reply channel's in order, channels side by side) while the
    next round is written, never more than one round's answers at a time.
    ``drain()`` returns once everything put so far is written and answered.
    """

    def __init__(self, flow: Any, send_reply: SendReply, window: PushWindow | None) -> None:
        self.flow = flow
        self.send_reply = send_reply
        self.window = window
        self.waiting: deque[tuple[dict[str, Any], int | None]] = deque()
        self.arrived = asyncio.Event()
        self.idle = asyncio.Event()  # nothing waiting, being written or being answered
        self.idle.set()
        self.task: asyncio.Future[None] | None = None
        self.answering: asyncio.Future[None] | None = None

    def put(self, message: dict[str, Any], batch: int | None = None) -> None:
        """``message`` to write; ``batch``: the number of the batch it came in."""
        self.waiting.append((message, batch))
        self.idle.clear()
        self.arrived.set()
        if self.task is None:
            self.task = asyncio.ensure_future(self._run())

    async def drain(self) -> None:
        """Until every message put so far is written and answered."""
        await self.idle.wait()

    def close(self) -> None:
        for task in (self.task, self.answering):
            if task is not None:
                task.cancel()

    async def _run(self) -> None:
        while True:
            if not self.waiting:
                await self._answered()
                if not self.waiting:
                    self.idle.set()
                    self.arrived.clear()
                    await self.arrived.wait()
                continue
            messages: list[tuple[dict[str, Any], int | None]] = []
            while self.waiting and len(messages) < IN_FLIGHT:
                messages.append(self.waiting.popleft())
            try:
                await self._round(messages)
            except Exception:  # a round's boundary: a bug must not stop the pushes after these
                logger.exception("push round of %d messages failed", len(messages))

    async def _answered(self) -> None:
        if self.answering is not None:
            await self.answering
            self.answering = None

    async def _round(self, messages: list[tuple[dict[str, Any], int | None]]) -> None:
        items = [self._receive(message, batch) for message, batch in messages]
        try:
            items = await learn_primary_keys(
                self.flow.writer, items, self.flow.settings.max_document_bytes
            )
            await write_round(self.flow.writer, items)
        except Exception as error:  # the round's boundary: a bug of ours; every push is answered
            logger.exception("push round of %d messages failed", len(messages))
            for item in items:
                if item.result is None:
                    item.result = error_result(
                        item.message.get("id"), f"internal error: {error!r}", UNAVAILABLE
                    )
        finally:
            if self.window is not None:
                self.window.release(len(messages))
        for item in items:
            self._account(item)
        await self._answered()  # the previous round's answers, sent meanwhile
        self.answering = asyncio.ensure_future(self._answer(items))

    def _receive(self, message: dict[str, Any], batch: int | None) -> Received:
        try:
            return receive(message, self.flow.writer, self.flow.settings.max_document_bytes, batch)
        except Exception as error:  # a bug of ours: this push is answered, the others go on
            logger.exception("push could not be read")
            return Received(
                message,
                result=error_result(message.get("id"), f"internal error: {error!r}", UNAVAILABLE),
            )

    def _account(self, item: Received) -> None:
        """Metrics and the log line of one handled push."""
        request, result = item.request, item.result
        if result is None:  # cannot happen; never leave a sender without an answer
            result = item.result = error_result(
                item.message.get("id"), "internal error", UNAVAILABLE
            )
        metrics.count_push(result if request is not None else None)
        if not result["ok"]:
            message = item.message
            logger.error(
                "push refused (%s.%s): %s",
                message.get("database"),
                message.get("table"),
                result.get("error"),
            )
        elif self.flow.verbose and request is not None:
            logger.info(
                "push %s into %s: %d inserted, %d replaced, %d unchanged, %d deleted",
                request.op,
                request.stream,
                result["inserted"],
                result["replaced"],
                result["unchanged"],
                result["deleted"],
            )

    async def _answer(self, items: list[Received]) -> None:
        by_channel: dict[str, list[dict[str, Any]]] = {}
        together: dict[str, bool] = {}  # every push to the channel takes batched answers
        for item in items:
            reply = item.message.get("reply_channel")
            if isinstance(reply, str) and reply and item.result is not None:
                by_channel.setdefault(reply, []).append(item.result)
                together[reply] = together.get(reply, True) and (
                    item.message.get("batch_answers") is True
                )

        async def send_in_order(channel: str, results: list[dict[str, Any]]) -> None:
            if len(results) > 1 and together[channel]:
                # One message for all of them (a websocket consumer's pushes).
                if not await self.send_reply(channel, {"type": RESULTS_TYPE, "results": results}):
                    logger.warning("%d answer(s) on %s not sent", len(results), channel)
                return
            for index, result in enumerate(results):
                if not await self.send_reply(channel, result):
                    # Its channel stayed full (a sender gone, or far behind) or the layer
                    # stayed down: the rest would wait as long each, holding up every
                    # other sender's answers. Its sender retries (idempotency keys).
                    if len(results) > index + 1:
                        logger.warning(
                            "%d more answer(s) on %s not sent", len(results) - index - 1, channel
                        )
                    return

        await asyncio.gather(*(send_in_order(c, results) for c, results in by_channel.items()))
