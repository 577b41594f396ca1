"""Bursts of pushes through the worker process, which writes them in rounds
(several one-document inserts per query): each push lands exactly once, in order
per table, with an answer of its own; bad pushes get their own errors; pushes
received while RethinkDB is down are written once it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from changeflow_channels.rethinkdb_url import parse_rethinkdb_url

from ..conftest import save_output
from ..polling import send_when_room
from .conftest import start_ready_worker
from .helpers import receive

pytestmark = pytest.mark.usefixtures("worker")

SENDERS = 4
PER_SENDER = 150
TABLES = ("a", "b")


def push(database: str, table: str, data: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "changeflow.push", "database": database, "table": table, "data": data, **fields}


async def sender(
    layer: RedisChannelLayer, messages: list[dict[str, Any]], timeout: float = 60
) -> list[dict[str, Any]]:
    """Send ``messages`` in order with a reply channel of their own; their answers."""
    reply = await layer.new_channel()

    async def answers() -> list[dict[str, Any]]:
        return [await receive(layer, reply, timeout) for _ in messages]

    receiving = asyncio.ensure_future(answers())  # reading while sending: no full reply channel
    for message in messages:
        # The worker's channel holds 100: wait for room while it is full.
        await send_when_room(layer, "changeflow", {**message, "reply_channel": reply})
    return await receiving


async def read_table(ar, connect_kwargs: dict, database: str, table: str) -> list[dict]:
    conn = await ar.connect(**connect_kwargs)
    try:
        cursor = await ar.db(database).table(table).run(conn)
        return [doc async for doc in cursor]
    finally:
        await conn.close(noreply_wait=False)


def check_inserted(answer: dict[str, Any], docs_by_key: dict[str, dict], data: dict) -> None:
    assert answer["ok"] is True, answer
    assert (answer["inserted"], answer["unchanged"], answer["errors"]) == (1, 0, 0), answer
    [key] = answer["generated_keys"]
    assert docs_by_key.pop(key) == {"id": key, **data}  # stored once, under its answered key


async def test_a_burst_from_several_senders_lands_once_in_order_with_one_answer_each(
    layer, stream_db, rethinkdb_target, ar
):
    kwargs = rethinkdb_target.connect_kwargs()
    conn = await ar.connect(**kwargs)
    feeds = {}
    try:
        await ar.db_create(stream_db).run(conn)
        for table in TABLES:
            await ar.db(stream_db).table_create(table).run(conn)
            feeds[table] = await ar.db(stream_db).table(table).changes().run(conn)
        bursts = [
            [push(stream_db, TABLES[n % 2], {"s": s, "n": n}, id=[s, n]) for n in range(PER_SENDER)]
            for s in range(SENDERS)
        ]
        answers = await asyncio.wait_for(
            asyncio.gather(*(sender(layer, burst) for burst in bursts)), 120
        )

        # The write order per table, as RethinkDB's changefeed saw it.
        per_table = SENDERS * PER_SENDER // len(TABLES)
        written: dict[str, list[dict]] = {}
        for table, feed in feeds.items():
            written[table] = [
                (await asyncio.wait_for(feed.next(), 30))["new_val"] for _ in range(per_table)
            ]
    finally:
        await conn.close(noreply_wait=False)

    keys = set()
    for s, got in enumerate(answers):
        assert [answer["id"] for answer in got] == [[s, n] for n in range(PER_SENDER)]
        for answer in got:
            assert answer["ok"] is True and answer["inserted"] == 1, answer
            keys.update(answer["generated_keys"])
    assert len(keys) == SENDERS * PER_SENDER
    for table in TABLES:
        docs = {doc["id"]: doc for doc in await read_table(ar, kwargs, stream_db, table)}
        assert len(docs) == per_table
        for burst, got in zip(bursts, answers, strict=True):
            for message, answer in zip(burst, got, strict=True):
                if message["table"] == table:
                    check_inserted(answer, docs, message["data"])
        assert docs == {}
        # Each sender's pushes into this table were written in the order sent.
        order: dict[int, list[int]] = defaultdict(list)
        for doc in written[table]:
            order[doc["s"]].append(doc["n"])
        for s in range(SENDERS):
            assert order[s] == [n for n in range(PER_SENDER) if TABLES[n % 2] == table]


async def test_bad_and_duplicate_pushes_in_a_burst_get_their_own_errors(
    layer, stream_db, rethinkdb_target, ar
):
    first = await sender(layer, [push(stream_db, "t", {"id": "dup", "n": -1})])
    assert first[0]["ok"] is True, first
    burst = [push(stream_db, "t", {"n": n}, id=n) for n in range(90)]
    burst[30] = push(stream_db, "t", {"id": "dup", "n": 30}, id=30)  # a duplicate key
    burst[45] = push(stream_db, "t", "not a document", id=45)
    burst[60] = push(stream_db, "t", {"n": 60}, op="merge", id=60)
    answers = await sender(layer, burst)
    assert [answer["id"] for answer in answers] == list(range(90))
    assert answers[30]["ok"] is False and "Duplicate primary key" in answers[30]["error"]
    assert answers[30]["code"] == "rejected"
    assert answers[45] == {
        "type": "changeflow.push.result",
        "id": 45,
        "ok": False,
        "error": "data must be an object or a list of objects, not str",
        "code": "invalid",
    }
    assert answers[60]["ok"] is False and "unknown op 'merge'" in answers[60]["error"]
    assert answers[60]["code"] == "invalid"
    docs = {
        doc["id"]: doc
        for doc in await read_table(ar, rethinkdb_target.connect_kwargs(), stream_db, "t")
    }
    assert docs.pop("dup") == {"id": "dup", "n": -1}  # untouched
    for n, (message, answer) in enumerate(zip(burst, answers, strict=True)):
        if n not in (30, 45, 60):
            check_inserted(answer, docs, message["data"])
    assert docs == {}


async def test_pushes_received_while_rethinkdb_is_down_are_written_once_it_is_back(
    faulty_rethinkdb, process_env, redis_url, stream_db, ar
):
    prefix = "pb" + uuid.uuid4().hex[:8]
    worker = start_ready_worker(
        process_env,
        extra_env={
            "CHANGEFLOW_TEST_RETHINKDB_URL": faulty_rethinkdb.url,
            "CHANGEFLOW_TEST_REDIS_PREFIX": prefix,
            "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
            "CHANGEFLOW_TEST_HANDLERS": "",
            "CHANGEFLOW_TEST_DEBUG_LOGS": "1",
        },
    )
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": None}], prefix=prefix)
    try:
        first = await sender(layer, [push(stream_db, "t", {"n": -1})])  # creates the table
        assert first[0]["ok"] is True, first
        faulty_rethinkdb.stop()
        bursts = [
            [push(stream_db, "t", {"s": s, "n": n}, id=n) for n in range(50)] for s in range(2)
        ]
        sending = asyncio.gather(*(sender(layer, burst) for burst in bursts))
        # The worker has taken every push from Redis and is retrying the first.
        await asyncio.to_thread(worker.wait_for, r"retrying push", 10)
        channel_key = layer.prefix + "changeflow"
        for _ in range(500):
            if await layer.connection(0).zcard(channel_key) == 0:
                break
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("the worker did not take the pushes")
        faulty_rethinkdb.start()
        answers = await asyncio.wait_for(sending, 60)

        kwargs = parse_rethinkdb_url(faulty_rethinkdb.url).connect_kwargs()
        docs = {doc["id"]: doc for doc in await read_table(ar, kwargs, stream_db, "t")}
        assert len(docs) == 101
        for burst, got in zip(bursts, answers, strict=True):
            assert [answer["id"] for answer in got] == list(range(50))
            for message, answer in zip(burst, got, strict=True):
                check_inserted(answer, docs, message["data"])
    finally:
        await layer.close_pools()
        worker.stop()
        save_output("push-bursts-worker", worker)
