"""Fault injection on a RethinkDB of the test's own (a ReQL test server or a real
process), and what the official driver then does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from rethinkdb.errors import (
    ReqlDriverError,
    ReqlOpFailedError,
    ReqlRuntimeError,
    ReqlTimeoutError,
)

from changeflow_channels.testing.faulty import FaultyRethinkDB

from ..conftest import only_on_test_server
from ._client import Client, error_message

DB = "faults"


async def _connect(server: FaultyRethinkDB, kind: str, **kwargs) -> Client:
    return await Client.connect(kind, host=server.host, port=server.port, db=DB, **kwargs)


@pytest.fixture
async def faulty(faulty_rethinkdb: FaultyRethinkDB, kind: str) -> AsyncIterator[Client]:
    """A connection to the private server, with table ``items`` in database ``faults``."""
    client = await _connect(faulty_rethinkdb, kind)
    await client.run(client.r.db_create(DB))
    await client.run(client.r.table_create("items"))
    yield client
    await client.close()


async def test_drop_connections_ends_an_open_feed(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client, kind: str
) -> None:
    r = faulty.r
    feed = await faulty.feed(r.table("items").changes())
    assert faulty_rethinkdb.drop_connections() >= 1
    with pytest.raises((ReqlDriverError, ReqlRuntimeError), match="Connection is closed"):
        await feed.next()
    with pytest.raises(ReqlDriverError, match="Connection is closed"):
        await faulty.run(r.expr(1))
    fresh = await _connect(faulty_rethinkdb, kind)
    try:
        assert await fresh.run(r.table_list()) == ["items"]
    finally:
        await fresh.close()


async def test_restart_keeping_data(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client, kind: str
) -> None:
    r = faulty.r
    await faulty.run(r.table("items").insert({"id": 1}))
    port = faulty_rethinkdb.port
    faulty_rethinkdb.restart(keep_data=True)
    assert faulty_rethinkdb.port == port
    with pytest.raises(ReqlDriverError):
        await faulty.run(r.expr(1))
    fresh = await _connect(faulty_rethinkdb, kind)
    try:
        assert await fresh.run(r.table("items").get(1)) == {"id": 1}
    finally:
        await fresh.close()


async def test_restart_discarding_data(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client, kind: str
) -> None:
    r = faulty.r
    await faulty.run(r.table("items").insert({"id": 1}))
    faulty_rethinkdb.restart(keep_data=False)
    fresh = await _connect(faulty_rethinkdb, kind)
    try:
        message = await error_message(ReqlOpFailedError, fresh.run(r.table("items")))
        assert message == f"Database `{DB}` does not exist."
    finally:
        await fresh.close()


async def test_connecting_while_the_server_is_down(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client, kind: str
) -> None:
    faulty_rethinkdb.stop()
    with pytest.raises(ReqlDriverError, match="Could not connect"):
        await _connect(faulty_rethinkdb, kind)
    faulty_rethinkdb.start()
    fresh = await _connect(faulty_rethinkdb, kind)
    try:
        assert await fresh.run(fresh.r.table_list()) == ["items"]
    finally:
        await fresh.close()


@only_on_test_server("set_delay holds back every response; a real process has no such switch")
async def test_delay_holds_back_responses(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client
) -> None:
    r = faulty.r
    faulty_rethinkdb.set_delay(0.3)
    started = time.monotonic()
    assert await faulty.run(r.expr("late")) == "late"
    assert time.monotonic() - started >= 0.3
    faulty_rethinkdb.set_delay(0)
    started = time.monotonic()
    assert await faulty.run(r.expr("prompt")) == "prompt"
    assert time.monotonic() - started < 0.3


async def test_freeze_holds_feed_changes_until_thaw(
    faulty_rethinkdb: FaultyRethinkDB, faulty: Client, kind: str
) -> None:
    r = faulty.r
    feed = await faulty.feed(r.table("items").changes())
    writer = await _connect(faulty_rethinkdb, kind)
    try:
        faulty_rethinkdb.freeze()
        # Sent to a server that answers nothing; it runs once thawed (a real one reads
        # it then, the test server has already run it and held back the answer).
        await writer.raw(r.table("items").insert({"id": "while-frozen"}), noreply=True)
        with pytest.raises((ReqlTimeoutError, asyncio.TimeoutError)):
            await feed.next(timeout=0.2)
        faulty_rethinkdb.thaw()
        assert (await feed.next())["new_val"] == {"id": "while-frozen"}
    finally:
        faulty_rethinkdb.thaw()
        await writer.close()
    await feed.close()


async def test_connecting_to_a_frozen_server_times_out(
    faulty_rethinkdb: FaultyRethinkDB, kind: str
) -> None:
    faulty_rethinkdb.freeze()
    try:
        with pytest.raises((ReqlDriverError, ReqlTimeoutError)):
            await Client.connect(
                kind, host=faulty_rethinkdb.host, port=faulty_rethinkdb.port, timeout=0.3
            )
    finally:
        faulty_rethinkdb.thaw()


async def test_frozen_query_completes_on_thaw_or_fails_on_drop(
    faulty_rethinkdb: FaultyRethinkDB,
) -> None:
    client = await Client.connect("asyncio", host=faulty_rethinkdb.host, port=faulty_rethinkdb.port)
    r = client.r
    faulty_rethinkdb.freeze()
    held = asyncio.ensure_future(client.run(r.expr("held")))
    done, _ = await asyncio.wait({held}, timeout=0.2)
    assert not done, "a frozen server must not answer"
    faulty_rethinkdb.thaw()
    assert await asyncio.wait_for(held, 5) == "held"

    faulty_rethinkdb.freeze()
    lost = asyncio.ensure_future(client.run(r.expr("lost")))
    done, _ = await asyncio.wait({lost}, timeout=0.1)
    assert not done
    faulty_rethinkdb.drop_connections()
    with pytest.raises(ReqlDriverError, match="Connection is closed"):
        await asyncio.wait_for(lost, 5)
    faulty_rethinkdb.thaw()
    await client.close()
