"""Idempotent pushes at the push writer, against the session's RethinkDB (a ReQL test
server or a real one) and, for crashes, one of the test's own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.pushes import parse_push
from changeflow_channels.rethink import Reconnecting, new_driver
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.ddl import TableRegistry
from changeflow_channels.worker import push_keys
from changeflow_channels.worker.idempotency import (
    fingerprint,
    finish,
    new_record,
    record_id,
    write_once,
)
from changeflow_channels.worker.idempotent_rounds import begin_round
from changeflow_channels.worker.push_batches import write_round
from changeflow_channels.worker.push_keys import PENDING
from changeflow_channels.worker.push_plan import plan, receive
from changeflow_channels.worker.push_writer import PushWriter

from .conftest import only_on_test_server

COUNTS = ("inserted", "replaced", "unchanged", "deleted", "skipped", "errors")


def make_writer(url: str, window: float = 3600.0) -> PushWriter:
    r = new_driver()
    return PushWriter(Reconnecting(r, parse_rethinkdb_url(url)), TableRegistry(r), 10.0, window)


def push(database: str, data: Any, ikey: str = "k1", **fields: Any) -> Any:
    message = {"database": database, "table": "t", "data": data, "idempotency_key": ikey}
    return parse_push({**message, **fields})


async def once(writer: PushWriter, request: Any) -> dict[str, Any]:
    return await write_once(writer, request, time.monotonic() + writer.deadline)


def documents(target: Any, database: str) -> list[dict[str, Any]]:
    r = RethinkDB()
    with r.connect(**target.connect_kwargs()) as conn:
        return sorted(r.db(database).table("t").run(conn), key=repr)


@pytest.fixture
def writer(rethinkdb_target) -> PushWriter:
    return make_writer(rethinkdb_target.url)


def same_answer(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first["ok"] is second["ok"] is True, (first, second)
    assert first["generated_keys"] == second["generated_keys"]
    assert {n: first[n] for n in COUNTS} == {n: second[n] for n in COUNTS}


async def test_an_insert_without_keys_pushed_twice_is_written_once(
    writer, rethinkdb_target, dbname
):
    data = [{"n": 1}, {"n": 2}]
    first = await once(writer, push(dbname, data, id="a"))
    second = await once(writer, push(dbname, data, id="b"))
    same_answer(first, second)
    assert (first["inserted"], len(first["generated_keys"])) == (2, 2)
    assert (first["id"], second["id"]) == ("a", "b")  # each answer carries its own id
    stored = documents(rethinkdb_target, dbname)
    assert sorted(doc["id"] for doc in stored) == sorted(first["generated_keys"])


@pytest.mark.parametrize(
    ("op", "data", "key", "expected"),
    [
        ("insert", {"id": "own", "v": 1}, None, {"inserted": 1}),
        ("upsert", {"id": "seed", "v": 2}, None, {"replaced": 1}),
        ("update", {"v": 3}, "seed", {"replaced": 1}),
        ("update", [{"id": "seed", "w": 1}], None, {"replaced": 1}),
        ("replace", {"v": 4}, "seed", {"replaced": 1}),
        ("delete", None, "seed", {"deleted": 1}),
        ("delete", ["seed"], None, {"deleted": 1}),
    ],
)
async def test_every_op_pushed_twice_is_written_once_and_answered_alike(
    writer, rethinkdb_target, dbname, op, data, key, expected
):
    assert (
        await writer.write(
            parse_push({"database": dbname, "table": "t", "data": {"id": "seed", "v": 0}})
        )
    )["ok"]
    first = await once(writer, push(dbname, data, op=op, key=key))
    after_first = documents(rethinkdb_target, dbname)
    second = await once(writer, push(dbname, data, op=op, key=key))
    same_answer(first, second)
    assert {n: first[n] for n in expected} == expected, first
    assert documents(rethinkdb_target, dbname) == after_first


async def test_a_refused_push_is_refused_alike_and_not_written_again(
    writer, rethinkdb_target, dbname
):
    assert (await once(writer, push(dbname, {"id": 1}, ikey="first")))["ok"]
    batch = [{"id": 1}, {"id": 2}]  # one duplicate, one new
    first = await once(writer, push(dbname, batch, ikey="dup"))
    assert (first["ok"], first["code"], first["inserted"]) == (False, "rejected", 1), first
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db(dbname).table("t").get(2).delete().run(conn)
    second = await once(writer, push(dbname, batch, ikey="dup"))
    assert {k: v for k, v in second.items() if k != "id"} == {
        k: v for k, v in first.items() if k != "id"
    }
    assert [doc["id"] for doc in documents(rethinkdb_target, dbname)] == [1]


async def test_one_key_for_two_different_pushes_is_refused(writer, rethinkdb_target, dbname):
    assert (await once(writer, push(dbname, {"n": 1})))["ok"]
    other = await once(writer, push(dbname, {"n": 2}, id=9))
    assert (other["ok"], other["code"], other["id"]) == (False, "invalid", 9), other
    assert "was used for a different push" in other["error"]
    assert [doc["n"] for doc in documents(rethinkdb_target, dbname)] == [1]


async def test_one_key_in_two_tables_or_without_a_key_is_written_each_time(
    writer, rethinkdb_target, dbname
):
    assert (await once(writer, push(dbname, {"n": 1})))["ok"]
    assert (await once(writer, push(dbname, {"n": 1}, table="u")))["ok"]
    plain = parse_push({"database": dbname, "table": "t", "data": {"n": 1}})
    assert (await writer.write(plain))["ok"]
    assert len(documents(rethinkdb_target, dbname)) == 2


async def test_the_record_outlives_the_writer_and_its_connection(rethinkdb_target, dbname):
    first = await once(make_writer(rethinkdb_target.url), push(dbname, {"n": 1}))
    # A worker started afterwards (another process, another connection).
    second = await once(make_writer(rethinkdb_target.url), push(dbname, {"n": 1}))
    same_answer(first, second)
    assert len(documents(rethinkdb_target, dbname)) == 1


async def test_a_pending_record_is_completed_once_by_the_next_attempt(
    writer, rethinkdb_target, dbname
):
    """What a worker killed between writing the documents and completing the record
    leaves behind: the documents, and the record pending with their keys."""
    request = push(dbname, [{"n": 1}, {"id": "own", "n": 2}])
    keyed, generated = writer.with_keys(request)
    assert (await writer.write_keyed(keyed, generated))["ok"]
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db(push_keys.DATABASE).table(push_keys.TABLE).insert(
            {
                "id": record_id(dbname, "t", "k1"),
                "stream": f"{dbname}.t",
                "key": "k1",
                "at": time.time(),
                "state": PENDING,
                "fingerprint": fingerprint(request),
                "pk": "id",
                "generated": generated,
                "attempt": "the killed worker's",
            }
        ).run(conn)
    answer = await once(make_writer(rethinkdb_target.url), request)
    assert (answer["ok"], answer["inserted"], answer["unchanged"]) == (True, 2, 0), answer
    assert answer["generated_keys"] == generated
    assert len(documents(rethinkdb_target, dbname)) == 2
    again = await once(writer, request)
    same_answer(answer, again)


@pytest.mark.parametrize("b_completes", [True, False], ids=["b-completes", "a-completes"])
@pytest.mark.parametrize("data", [[{"n": 1}], [{"id": "own", "n": 1}]], ids=["ours", "own"])
async def test_two_copies_at_once_on_two_workers_land_once_and_agree(
    rethinkdb_target, dbname, data, b_completes
):
    """Worker A records the push; before it writes, worker B gets a copy, finds the
    record pending and writes our documents (and completes the record, or not yet).
    A's write then meets them: they are ours, and both answers agree."""
    first, second = make_writer(rethinkdb_target.url), make_writer(rethinkdb_target.url)
    request = push(dbname, data)
    record, keyed, generated = new_record(first, request)
    attempt = await first.push_keys.begin(await first.connection.get(), record)
    assert attempt.created
    if b_completes:
        by_b = await once(second, request)
    else:  # B found the record pending and wrote, and is slow to complete it
        copy, _, _ = new_record(second, request)
        taken = await second.push_keys.begin(await second.connection.get(), copy)
        assert not taken.created and taken.record["generated"] == generated
        assert (await second.write_keyed(keyed, generated, retry=True))["ok"]
    give_up = time.monotonic() + 10
    by_a = await finish(first, request, record, attempt, keyed, generated, give_up)
    if not b_completes:
        by_b = await once(second, request)
    assert {k: v for k, v in by_a.items()} == {k: v for k, v in by_b.items()}
    assert by_a["ok"] and by_a["inserted"] == 1 and by_a["generated_keys"] == generated
    assert len(documents(rethinkdb_target, dbname)) == 1


async def test_a_key_older_than_the_window_is_forgotten_and_expired(rethinkdb_target, dbname):
    writer = make_writer(rethinkdb_target.url, window=0.5)
    assert (await once(writer, push(dbname, {"n": 1})))["ok"]
    await asyncio.sleep(0.6)
    assert (await once(writer, push(dbname, {"n": 1})))["ok"]
    assert len(documents(rethinkdb_target, dbname)) == 2  # a new push after the window
    deleted = await writer.push_keys.expire(time.time() + 1.0)
    assert deleted >= 1
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        left = (
            r.db(push_keys.DATABASE)
            .table(push_keys.TABLE)
            .get(record_id(dbname, "t", "k1"))
            .run(conn)
        )
    assert left is None


async def test_expiry_deletes_a_bounded_number_at_a_time(rethinkdb_target, monkeypatch):
    writer = make_writer(rethinkdb_target.url, window=1.0)
    conn = await writer.connection.get()
    await writer.push_keys.ensure(conn)
    r = RethinkDB()
    old = time.time() - 3600 * 48  # long expired, whatever the window of other tests
    with r.connect(**rethinkdb_target.connect_kwargs()) as sync:
        r.db(push_keys.DATABASE).table(push_keys.TABLE).insert(
            [{"id": f"expiry-test-{n}", "at": old - n, "state": "done"} for n in range(5)]
        ).run(sync)
    monkeypatch.setattr(push_keys, "EXPIRE_BATCH", 3)
    assert await writer.push_keys.expire(time.time()) == 3
    assert await writer.push_keys.expire(time.time()) >= 2


# A real process cannot be made to write but not answer: SIGSTOP stops both.
@only_on_test_server("the server writes while frozen, then the answer is dropped")
async def test_a_worker_killed_after_the_write_leaves_a_retry_that_lands_once(faulty_rethinkdb):
    writer = make_writer(faulty_rethinkdb.url)
    database = "crash"
    request = push(database, [{"n": 1}, {"n": 2}])
    # The table and the record table exist: only the push's own queries remain.
    assert (await once(writer, push(database, {"n": 0}, ikey="warm-up")))["ok"]

    def stored_while_frozen() -> int:
        async def count() -> int:
            store = faulty_rethinkdb.server.engine.store
            return len(store.db(database).tables["t"].scan())

        return faulty_rethinkdb.call(count)

    # The worker's first steps: the record, pending; then the write, whose answer is lost.
    record, keyed, generated = new_record(writer, request)
    await writer.push_keys.begin(await writer.connection.get(), record)
    faulty_rethinkdb.freeze()  # the server still writes, but answers nothing
    task = asyncio.ensure_future(writer.write_keyed(keyed, generated))
    deadline = time.monotonic() + 10
    while stored_while_frozen() < 3:
        assert time.monotonic() < deadline, "the write never landed"
        await asyncio.sleep(0.01)
    task.cancel()  # the worker dies: its record stays pending
    faulty_rethinkdb.drop_connections()
    faulty_rethinkdb.thaw()
    answer = await once(make_writer(faulty_rethinkdb.url), request)
    assert (answer["ok"], answer["inserted"]) == (True, 2), answer
    r = RethinkDB()
    with r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port) as conn:
        stored = list(r.db(database).table("t").run(conn))
    assert sorted(doc["n"] for doc in stored) == [0, 1, 2]
    assert answer["generated_keys"] == generated


# -- a round's keyed inserts, recorded together and grouped ------------------------------------


def keyed_round(writer: PushWriter, database: str, keys: list[str]) -> list[Any]:
    """A round of keyed inserts, each from a sender of its own (so they may be grouped)."""
    messages = [
        {
            "type": "changeflow.push",
            "database": database,
            "table": "t",
            "data": [{"n": key}, {"m": key}],
            "idempotency_key": key,
            "reply_channel": f"reply.{n}",
            "id": n,
        }
        for n, key in enumerate(keys)
    ]
    return [receive(message, writer, 1 << 20) for message in messages]


async def test_a_rounds_keyed_inserts_are_grouped_and_written_once(
    writer, rethinkdb_target, dbname
):
    assert (await writer.write(parse_push({"database": dbname, "table": "t", "data": {}})))["ok"]
    writer.tables.remember(dbname, "t", "id")  # as the worker learns it
    keys = [f"k{n}" for n in range(30)]
    items = keyed_round(writer, dbname, keys)
    await begin_round(writer, items)
    assert all(item.attempt is not None and item.groupable for item in items)
    assert len(plan(items)) == 1  # one insert query for all thirty
    await write_round(writer, items)  # (their records are made already: begun once only)
    first = [item.result for item in items]
    assert [(a["ok"], a["inserted"], a["id"]) for a in first] == [(True, 2, n) for n in range(30)]
    # The same pushes again (a sender retrying them all), the same key twice among them.
    again = keyed_round(writer, dbname, [*keys, "k0"])
    await write_round(writer, again)
    for n, item in enumerate(again):
        same_answer(first[n % 30], item.result)
        assert item.attempt is None  # found done: answered from the record
    stored = documents(rethinkdb_target, dbname)
    assert len(stored) == 1 + 60
    assert sorted(doc["id"] for doc in stored if "n" in doc or "m" in doc) == sorted(
        key for answer in first for key in answer["generated_keys"]
    )


async def test_one_key_twice_in_a_round_is_written_once(writer, rethinkdb_target, dbname):
    assert (await writer.write(parse_push({"database": dbname, "table": "t", "data": {}})))["ok"]
    writer.tables.remember(dbname, "t", "id")
    items = keyed_round(writer, dbname, ["a", "b", "a", "c"])
    await write_round(writer, items)
    answers = [item.result for item in items]
    same_answer(answers[0], answers[2])
    assert all(answer["ok"] and answer["inserted"] == 2 for answer in answers)
    assert len(documents(rethinkdb_target, dbname)) == 1 + 6


def test_the_window_is_the_setting_unless_given(rethinkdb_target, settings):
    settings.CHANGEFLOW_IDEMPOTENCY_WINDOW = 7.5
    r = new_driver()
    connection = Reconnecting(r, parse_rethinkdb_url(rethinkdb_target.url))
    assert PushWriter(connection, TableRegistry(r), 10.0).push_keys.window == 7.5
    assert PushWriter(connection, TableRegistry(r), 10.0, 60.0).push_keys.window == 60.0


async def test_a_worker_stopping_cancels_the_expiry_round_still_running(rethinkdb_target):
    """The expiry of old keys runs in the background: a worker that stops must not
    leave it pending (a task destroyed by the closed loop, a query on a closed
    connection)."""
    writer = make_writer(rethinkdb_target.url)
    started = asyncio.Event()

    async def slow_expire(now: float) -> int:
        started.set()
        await asyncio.sleep(3600)
        return 0

    writer.push_keys.expire = slow_expire  # type: ignore[method-assign]
    writer.push_keys.expire_soon()
    await asyncio.wait_for(started.wait(), 5)
    expiring = writer.push_keys._expiring
    assert expiring is not None and not expiring.done()
    writer.push_keys.close()
    await asyncio.wait([expiring], timeout=5)
    assert expiring.cancelled()


async def test_the_records_table_gets_a_replica_on_each_server(faulty_rethinkdb):
    """Three replicas where RethinkDB has three servers (tests/cluster/); here, on one
    server, the refused three and two end in one, and the records work."""
    writer = make_writer(faulty_rethinkdb.url)
    assert (await once(writer, push("replicas", {"n": 1})))["ok"]
    r = RethinkDB()
    with r.connect(faulty_rethinkdb.host, faulty_rethinkdb.port) as conn:
        config = r.db(push_keys.DATABASE).table(push_keys.TABLE).config().run(conn)
        assert push_keys.AT_INDEX in r.db(push_keys.DATABASE).table(
            push_keys.TABLE
        ).index_list().run(conn)
    assert [len(shard["replicas"]) for shard in config["shards"]] == [1]
