"""Pushes with an idempotency key in a round: their records made and completed together.

Every push of a browser client carries a key. Written one by one (``idempotency.write_once``:
three round trips each), they would lose the grouping of inserts (``push_batches``).
Here a round's keyed inserts whose documents all get keys of ours (none carries its
own primary key, the table's primary key is known) are recorded by one query
(``begin_round``); those whose record this round made take their recorded keys and
join the groups as any other insert; once written, their records are completed by
one query (``complete_round``). Everything else with a key (another op, documents
with their own keys, a record found done or pending, the same key twice in the
round, RethinkDB unreachable for the record) takes the one-by-one path of
``write_once``, which also answers it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from rethinkdb.errors import ReqlError

from ..pushes import RESULT_TYPE, PushRequest
from .idempotency import (
    FINAL_CODES,
    RecordsUnavailable,
    count_ours_inserted,
    new_record,
    with_records,
)
from .push_keys import DONE, Attempt

if TYPE_CHECKING:
    from .push_writer import PushWriter

logger = logging.getLogger(__name__)


class KeyedItem(Protocol):
    """What a round's item (``push_batches.Received``) offers here."""

    request: PushRequest | None
    generated: list[Any]
    groupable: bool
    result: dict[str, Any] | None
    attempt: Attempt | None


def _candidate(writer: PushWriter, request: PushRequest | None) -> bool:
    if request is None or request.idempotency_key is None or request.op != "insert":
        return False
    pk = writer.tables.known_primary_key(request.database, request.table)
    return pk is not None and not any(pk in doc for doc in request.documents)


async def begin_round(writer: PushWriter, items: list[Any]) -> None:
    """Record the round's groupable keyed inserts (one query); those recorded now
    are keyed as recorded and become groupable, with ``attempt`` set."""
    if any(item.request is not None and item.request.idempotency_key for item in items):
        writer.push_keys.expire_soon()
    chosen: dict[str, tuple[KeyedItem, dict[str, Any], PushRequest, list[Any]]] = {}
    for item in items:
        if item.result is None and item.attempt is None and _candidate(writer, item.request):
            record, keyed, generated = new_record(writer, item.request)
            chosen.setdefault(record["id"], (item, record, keyed, generated))
    if len(chosen) < 2:
        return  # nothing to share: write_once does as well
    records = [record for _, record, _, _ in chosen.values()]
    give_up = time.monotonic() + writer.deadline
    keys = writer.push_keys
    try:
        held = await with_records(writer, give_up, lambda conn: keys.begin_many(conn, records))
    except (RecordsUnavailable, ReqlError) as error:
        # Each is then recorded alone (write_once), or answered unavailable.
        logger.warning("records of %d keyed pushes not made together: %s", len(records), error)
        return
    for record_id, (item, _, keyed, generated) in chosen.items():
        attempt = held.get(record_id)
        if attempt is None or not attempt.created:
            continue  # found: write_once reads it again, and answers
        item.attempt = attempt
        item.request = keyed
        item.generated = generated
        item.groupable = True


async def complete_round(writer: PushWriter, items: list[Any]) -> None:
    """Complete the records of the round's items recorded by ``begin_round`` (one query);
    each gets the answer recorded. ``unavailable`` answers leave their record pending."""
    done: list[tuple[KeyedItem, Attempt, dict[str, Any]]] = []
    for item in items:
        if item.attempt is None or item.result is None or item.request is None:
            continue
        answer = item.result
        if answer["ok"]:
            count_ours_inserted(answer)
        elif answer.get("code") not in FINAL_CODES:
            continue
        stored = {name: value for name, value in answer.items() if name not in ("type", "id")}
        done.append((item, item.attempt, stored))
    if not done:
        return
    give_up = time.monotonic() + writer.deadline
    keys = writer.push_keys
    entries = [(attempt, stored) for _, attempt, stored in done]
    try:
        final = await with_records(writer, give_up, lambda conn: keys.complete_many(conn, entries))
    except (RecordsUnavailable, ReqlError) as error:
        logger.warning(
            "%d keyed pushes written, their records not completed (%s): a retry writes "
            "them again, so that they land once",
            len(done),
            error,
        )
        return
    for item, attempt, _ in done:
        held = final.get(attempt.record["id"])
        if held is not None and held.get("state") == DONE and "result" in held:
            assert item.request is not None
            item.result = {"type": RESULT_TYPE, **held["result"], "id": item.request.id}
