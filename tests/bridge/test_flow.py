"""End to end: pushes through Redis into RethinkDB, changes out to websocket clients.

Worker and Daphne are separate processes; this process is only a user of the
channel layer, the driver and a websocket client.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from rethinkdb.errors import ReqlOpFailedError

from changeflow_channels.tables.ddl import table_ids

from ..polling import poll_until
from .helpers import WsClient, receive

pytestmark = pytest.mark.usefixtures("worker")


def push(database: str, table: str, data, **fields) -> dict:
    return {"type": "changeflow.push", "database": database, "table": table, "data": data, **fields}


async def push_and_wait(layer, database: str, table: str, data, **fields) -> dict:
    reply = await layer.new_channel()
    await layer.send("changeflow", push(database, table, data, reply_channel=reply, **fields))
    return await receive(layer, reply)


async def test_hello_world_push_reaches_subscriber_and_rethinkdb(
    layer, ws_connect, stream_db, rethinkdb_target, ar
):
    client: WsClient = await ws_connect()
    other: WsClient = await ws_connect()
    stream = f"{stream_db}.testtable"
    # Neither the database nor the table exists yet: the very first push creates them.
    await client.subscribe(stream)
    await other.subscribe(f"{stream_db}.othertable")

    result = await push_and_wait(layer, stream_db, "testtable", {"message": "Hello world"}, id="p1")
    assert result["ok"] is True, result
    assert result["id"] == "p1"
    assert result["inserted"] == 1
    [key] = result["generated_keys"]

    [added] = await client.changes(stream, 1)
    assert added["type"] == "add"
    assert added["old_val"] is None
    assert added["new_val"] == {"id": key, "message": "Hello world"}
    assert added["seq"] == 1 and added["epoch"]

    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        stored = await ar.db(stream_db).table("testtable").get(key).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    assert stored == {"id": key, "message": "Hello world"}

    result = await push_and_wait(
        layer, stream_db, "testtable", {"message": "Hello again"}, op="update", key=key
    )
    assert result["ok"] and result["replaced"] == 1, result
    [changed] = await client.changes(stream, 1)
    assert changed["type"] == "change"
    assert changed["old_val"]["message"] == "Hello world"
    assert changed["new_val"]["message"] == "Hello again"

    result = await push_and_wait(layer, stream_db, "testtable", None, op="delete", key=key)
    assert result["ok"] and result["deleted"] == 1, result
    [removed] = await client.changes(stream, 1)
    assert removed["type"] == "remove"
    assert removed["new_val"] is None and removed["old_val"]["id"] == key
    assert [changed["seq"], removed["seq"]] == [2, 3]

    # The other client saw nothing of testtable: its first change is its own table's.
    await push_and_wait(layer, stream_db, "othertable", {"n": 1})
    first = await other.wait_for(lambda f: f.get("event") == "change")
    assert first["stream"] == f"{stream_db}.othertable"


async def test_table_created_by_another_client_is_followed_from_its_first_write(
    ws_connect, stream_db, rethinkdb_target, ar
):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.fromdriver"
    await client.subscribe(stream)
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        await ar.db_create(stream_db).run(conn)
        await ar.db(stream_db).table_create("fromdriver").run(conn)
        # Written at once, before the worker can have opened a feed on the new table.
        await ar.db(stream_db).table("fromdriver").insert([{"id": i} for i in range(5)]).run(conn)
        await ar.db(stream_db).table("fromdriver").get(0).update({"seen": True}).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    # Whether the update lands before the worker's feed opens or after it, the
    # client's view must end equal to the table.
    expected = {0: {"id": 0, "seen": True}, **{i: {"id": i} for i in range(1, 5)}}
    view: dict = {}
    while view != expected:
        [change] = await client.changes(stream, 1)
        assert change["type"] in ("add", "change"), change
        view[change["new_val"]["id"]] = change["new_val"]


async def test_a_table_dropped_and_created_again_is_followed_again(
    ws_connect, stream_db, rethinkdb_target, ar
):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.again"
    await client.subscribe(stream)
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        await ar.db_create(stream_db).run(conn)
        await ar.db(stream_db).table_create("again").run(conn)
        await ar.db(stream_db).table("again").insert({"id": 1}).run(conn)
        [first] = await client.changes(stream, 1)
        assert first["new_val"] == {"id": 1}
        # Dropped and created again at once: the worker may still hold the old
        # table's lease when the new one appears.
        await ar.db(stream_db).table_drop("again").run(conn)
        await ar.db(stream_db).table_create("again").run(conn)
        await ar.db(stream_db).table("again").insert({"id": 2}).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    again = await client.wait_for(
        lambda f: f.get("event") == "change" and (f.get("new_val") or {}).get("id") == 2, 20
    )
    assert again["stream"] == stream and again["epoch"] != first["epoch"]


async def test_seq_grows_by_exactly_one_per_change(layer, ws_connect, stream_db):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.counted"
    await client.subscribe(stream)
    for n in range(10):
        await layer.send("changeflow", push(stream_db, "counted", {"n": n}))
    result = await push_and_wait(layer, stream_db, "counted", [{"n": 10 + n} for n in range(10)])
    assert result["inserted"] == 10
    changes = await client.changes(stream, 20)
    assert [c["seq"] for c in changes] == list(range(1, 21))
    assert len({c["epoch"] for c in changes}) == 1
    assert sorted(c["new_val"]["n"] for c in changes) == list(range(20))


async def test_every_op(layer, ws_connect, stream_db):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.ops"
    await client.subscribe(stream)
    ok = await push_and_wait(layer, stream_db, "ops", [{"id": 1, "a": 1}, {"id": 2, "a": 2}])
    assert ok["inserted"] == 2
    # The push created the table: until its feed is open, later writes may reach the
    # client folded into the documents the feed announces (still an exact view).
    # Each op below must be a change of its own: wait for the feed first.
    added = await client.changes(stream, 2)
    ok = await push_and_wait(layer, stream_db, "ops", {"id": 1, "b": 1}, op="upsert")
    assert ok["replaced"] == 1
    ok = await push_and_wait(layer, stream_db, "ops", [{"id": 2, "c": 3}], op="update")
    assert ok["replaced"] == 1
    ok = await push_and_wait(layer, stream_db, "ops", {"z": 9}, op="replace", key=2)
    assert ok["replaced"] == 1
    ok = await push_and_wait(layer, stream_db, "ops", [{"id": 1}], op="delete")
    assert ok["deleted"] == 1
    changes = added + await client.changes(stream, 4)
    assert [c["type"] for c in changes[2:]] == ["change", "change", "change", "remove"]
    assert changes[2]["new_val"] == {"id": 1, "a": 1, "b": 1}
    assert changes[3]["new_val"] == {"id": 2, "a": 2, "c": 3}
    assert changes[4]["new_val"] == {"id": 2, "z": 9}
    assert changes[5]["old_val"]["id"] == 1


async def test_duplicate_key_is_reported_not_hidden(layer, stream_db):
    await push_and_wait(layer, stream_db, "dups", {"id": "same"})
    result = await push_and_wait(layer, stream_db, "dups", {"id": "same"}, id=7)
    assert result["ok"] is False
    assert result["id"] == 7
    assert "Duplicate primary key" in result["error"]


async def test_push_racing_another_client_to_create_the_table_succeeds(
    layer, ws_connect, stream_db, rethinkdb_target, ar
):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.race"
    await client.subscribe(stream)
    reply = await layer.new_channel()
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:

        async def create_with_driver() -> None:
            # Whichever of the two creates the database and table first, the
            # other must take "already exists" as success. A real server may
            # even make two tables of the name: the worker keeps one.
            for query in (ar.db_create(stream_db), ar.db(stream_db).table_create("race")):
                with contextlib.suppress(ReqlOpFailedError):
                    await query.run(conn)

        await asyncio.gather(
            layer.send("changeflow", push(stream_db, "race", {"n": 1}, reply_channel=reply)),
            create_with_driver(),
        )
        assert (await receive(layer, reply))["ok"] is True
        [change] = await client.changes(stream, 1)
        assert change["new_val"]["n"] == 1

        async def tables_named_race() -> int:
            return len(await table_ids(ar, conn, stream_db, "race"))

        await poll_until(tables_named_race, lambda n: n == 1, 15, lambda n: f"{n} tables")
        assert await ar.db(stream_db).table("race").count().run(conn) == 1
    finally:
        await conn.close(noreply_wait=False)


async def test_hooks_receive_every_change_despite_failing_and_hanging_hooks(
    layer, ws_connect, stream_db
):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.hooked"
    await client.subscribe(stream)
    ids = [uuid.uuid4().hex for _ in range(5)]
    for doc_id in ids:
        await layer.send("changeflow", push(stream_db, "hooked", {"id": doc_id}))
    # Delivery is not held up by the raising and the hanging hooks...
    changes = await client.changes(stream, 5)
    assert sorted(c["new_val"]["id"] for c in changes) == sorted(ids)
    # ...and the sync and async hooks see every change, in order.
    for channel in (f"hooks.sync.{stream_db}", f"hooks.async.{stream_db}"):
        seen = [await receive(layer, channel, timeout=20) for _ in ids]
        assert [s["change"]["new_val"]["id"] for s in seen] == [c["new_val"]["id"] for c in changes]
        assert all(s["table"] == "hooked" and s["change"]["type"] == "add" for s in seen)


async def test_times_and_binary_reach_the_browser_as_json(
    ws_connect, stream_db, rethinkdb_target, ar
):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.typed"
    await client.subscribe(stream)
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        await ar.db_create(stream_db).run(conn)
        await ar.db(stream_db).table_create("typed").run(conn)
        document = {"id": 1, "at": ar.epoch_time(0.5), "blob": ar.binary(b"hi")}
        await ar.db(stream_db).table("typed").insert(document).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    [change] = await client.changes(stream, 1)
    assert change["new_val"] == {"id": 1, "at": "1970-01-01T00:00:00.500000+00:00", "blob": "aGk="}
