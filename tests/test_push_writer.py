"""The push writer against a RethinkDB of the test's own (a ReQL test server or a
real process), with faults injected at the worst moment."""

from __future__ import annotations

import asyncio

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.pushes import parse_push
from changeflow_channels.rethink import Reconnecting, new_driver
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.ddl import TableRegistry
from changeflow_channels.testing import ThreadedReqlServer
from changeflow_channels.testing.faulty import FaultyRethinkDB
from changeflow_channels.worker.push_writer import PushWriter

from .conftest import only_on_test_server


def make_writer(url: str, deadline: float = 10.0) -> PushWriter:
    r = new_driver()
    return PushWriter(Reconnecting(r, parse_rethinkdb_url(url)), TableRegistry(r), deadline)


def push(data, **fields):
    return parse_push({"database": "d", "table": "t", "data": data, **fields})


def stored(server: FaultyRethinkDB) -> list[dict]:
    """Table d.t's documents, read with the driver."""
    r = RethinkDB()
    with r.connect(host=server.host, port=server.port) as conn:
        return list(r.db("d").table("t").run(conn))


def stored_while_frozen(server: ThreadedReqlServer) -> list[dict]:
    """Table d.t's documents in a frozen ReQL test server's memory (a frozen server
    answers no query: what it wrote can only be seen from inside)."""

    async def read() -> list[dict]:
        return server.server.engine.store.db("d").tables["t"].scan()

    return server.call(read)


# A real process cannot be made to write but not answer: SIGSTOP stops both.
ANSWER_LOST = only_on_test_server("the server writes while frozen, then the answer is dropped")


async def wait_until(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


@ANSWER_LOST
async def test_insert_whose_answer_is_lost_is_retried_without_duplicates(faulty_rethinkdb):
    writer = make_writer(faulty_rethinkdb.url)
    assert (await writer.write(push({"n": 0})))["ok"]
    faulty_rethinkdb.freeze()  # the server still writes, but answers nothing
    task = asyncio.ensure_future(writer.write(push([{"n": 1}, {"n": 2}])))
    await wait_until(lambda: len(stored_while_frozen(faulty_rethinkdb)) == 3)
    faulty_rethinkdb.drop_connections()  # the answer is lost with the connection
    faulty_rethinkdb.thaw()
    result = await asyncio.wait_for(task, 15)
    assert result["ok"] is True, result
    assert len(result["generated_keys"]) == 2
    assert result["unchanged"] == 2  # recognised as its own earlier attempt
    assert sorted(doc["n"] for doc in stored(faulty_rethinkdb)) == [0, 1, 2]


async def test_a_real_duplicate_is_still_refused_on_retry(faulty_rethinkdb):
    writer = make_writer(faulty_rethinkdb.url)
    assert (await writer.write(push({"id": "k", "v": 1})))["ok"]
    result = await writer._apply(await writer.connection.get(), push({"id": "k", "v": 2}), True)
    assert result["errors"] == 1 and "Duplicate primary key" in result["first_error"]
    answer = await writer.write(push({"id": "k", "v": 3}))
    assert (answer["ok"], answer["code"]) == (False, "rejected"), answer


async def test_push_is_answered_with_an_error_when_rethinkdb_stays_down(faulty_rethinkdb):
    writer = make_writer(faulty_rethinkdb.url, deadline=1.0)
    assert (await writer.write(push({"n": 0})))["ok"]
    faulty_rethinkdb.stop()
    result = await writer.write(push({"n": 1}, id="late"))
    assert result == {
        "type": "changeflow.push.result",
        "id": "late",
        "ok": False,
        "error": result["error"],
        "code": "unavailable",
    }
    assert result["error"].startswith("RethinkDB unavailable for 1 s")


@pytest.mark.parametrize(
    ("op", "data", "key", "error"),
    [
        ("update", [{"no_key": 1}], None, "has no primary key `id`"),
        ("replace", {"id": 2}, 1, "differs from key"),
        ("delete", [{"no_key": 1}], None, "every document needs its primary key"),
    ],
)
async def test_documents_without_their_key_are_refused(faulty_rethinkdb, op, data, key, error):
    writer = make_writer(faulty_rethinkdb.url)
    result = await writer.write(push(data, op=op, key=key))
    assert result["ok"] is False and error in result["error"]
    assert result["code"] == "invalid"


async def test_a_push_right_after_a_restart_waits_until_the_table_takes_writes(faulty_rethinkdb):
    # A real server answers "primary replica not available" for a moment after
    # it is up again: the push waits for the table, it is not refused.
    writer = make_writer(faulty_rethinkdb.url)
    assert (await writer.write(push({"n": 0})))["ok"]
    faulty_rethinkdb.stop()
    # Retrying the connection, the writes reach the server as soon as it listens.
    writes = [asyncio.ensure_future(writer.write(push({"n": n}))) for n in range(1, 4)]
    await asyncio.to_thread(faulty_rethinkdb.start)
    for result in await asyncio.wait_for(asyncio.gather(*writes), 30):
        assert (result["ok"], result["inserted"]) == (True, 1), result
    assert sorted(doc["n"] for doc in stored(faulty_rethinkdb)) == [0, 1, 2, 3]
