"""Fault injection on a private ReQL test server, and what the official driver then does."""

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

from changeflow_channels.testing import ThreadedReqlServer

from ._client import Client, error_message

DB = "faults"


async def _connect(server: ThreadedReqlServer, kind: str, **kwargs) -> Client:
    return await Client.connect(kind, host=server.host, port=server.port, db=DB, **kwargs)


@pytest.fixture
async def faulty(reql_server: ThreadedReqlServer, kind: str) -> AsyncIterator[Client]:
    """A connection to the private server, with table ``items`` in database ``faults``."""
    client = await _connect(reql_server, kind)
    await client.run(client.r.db_create(DB))
    await client.run(client.r.table_create("items"))
    yield client
    await client.close()


async def test_drop_connections_ends_an_open_feed(
    reql_server: ThreadedReqlServer, faulty: Client, kind: str
) -> None:
    r = faulty.r
    feed = await faulty.feed(r.table("items").changes())
    assert reql_server.drop_connections() >= 1
    with pytest.raises((ReqlDriverError, ReqlRuntimeError), match="Connection is closed"):
        await feed.next()
    with pytest.raises(ReqlDriverError, match="Connection is closed"):
        await faulty.run(r.expr(1))
    fresh = await _connect(reql_server, kind)
    try:
        assert await fresh.run(r.table_list()) == ["items"]
    finally:
        await fresh.close()


async def test_restart_keeping_data(
    reql_server: ThreadedReqlServer, faulty: Client, kind: str
) -> None:
    r = faulty.r
    await faulty.run(r.table("items").insert({"id": 1}))
    port = reql_server.port
    reql_server.restart(keep_data=True)
    assert reql_server.port == port
    with pytest.raises(ReqlDriverError):
        await faulty.run(r.expr(1))
    fresh = await _connect(reql_server, kind)
    try:
        assert await fresh.run(r.table("items").get(1)) == {"id": 1}
    finally:
        await fresh.close()


async def test_restart_discarding_data(
    reql_server: ThreadedReqlServer, faulty: Client, kind: str
) -> None:
    r = faulty.r
    await faulty.run(r.table("items").insert({"id": 1}))
    reql_server.restart(keep_data=False)
    fresh = await _connect(reql_server, kind)
    try:
        message = await error_message(ReqlOpFailedError, fresh.run(r.table("items")))
        assert message == f"Database `{DB}` does not exist."
    finally:
        await fresh.close()


async def test_connecting_while_the_server_is_down(
    reql_server: ThreadedReqlServer, faulty: Client, kind: str
) -> None:
    reql_server.call(reql_server.server.stop)
    with pytest.raises(ReqlDriverError, match="Could not connect"):
        await _connect(reql_server, kind)
    reql_server.call(reql_server.server.start)
    fresh = await _connect(reql_server, kind)
    try:
        assert await fresh.run(fresh.r.table_list()) == ["items"]
    finally:
        await fresh.close()


async def test_delay_holds_back_responses(reql_server: ThreadedReqlServer, faulty: Client) -> None:
    r = faulty.r
    reql_server.set_delay(0.3)
    started = time.monotonic()
    assert await faulty.run(r.expr("late")) == "late"
    assert time.monotonic() - started >= 0.3
    reql_server.set_delay(0)
    started = time.monotonic()
    assert await faulty.run(r.expr("prompt")) == "prompt"
    assert time.monotonic() - started < 0.3


async def test_freeze_holds_feed_changes_until_thaw(
    reql_server: ThreadedReqlServer, faulty: Client, kind: str
) -> None:
    r = faulty.r
    feed = await faulty.feed(r.table("items").changes())
    writer = await _connect(reql_server, kind)
    try:
        reql_server.freeze()
        # The server still reads and runs queries; only its answers are held back.
        await writer.raw(r.table("items").insert({"id": "while-frozen"}), noreply=True)
        with pytest.raises((ReqlTimeoutError, asyncio.TimeoutError)):
            await feed.next(timeout=0.2)
        reql_server.thaw()
        assert (await feed.next())["new_val"] == {"id": "while-frozen"}
    finally:
        reql_server.thaw()
        await writer.close()
    await feed.close()


async def test_connecting_to_a_frozen_server_times_out(
    reql_server: ThreadedReqlServer, kind: str
) -> None:
    reql_server.freeze()
    try:
        with pytest.raises((ReqlDriverError, ReqlTimeoutError)):
            await Client.connect(kind, host=reql_server.host, port=reql_server.port, timeout=0.3)
    finally:
        reql_server.thaw()


async def test_frozen_query_completes_on_thaw_or_fails_on_drop(
    reql_server: ThreadedReqlServer,
) -> None:
    client = await Client.connect("asyncio", host=reql_server.host, port=reql_server.port)
    r = client.r
    reql_server.freeze()
    held = asyncio.ensure_future(client.run(r.expr("held")))
    done, _ = await asyncio.wait({held}, timeout=0.2)
    assert not done, "a frozen server must not answer"
    reql_server.thaw()
    assert await asyncio.wait_for(held, 5) == "held"

    reql_server.freeze()
    lost = asyncio.ensure_future(client.run(r.expr("lost")))
    done, _ = await asyncio.wait({lost}, timeout=0.1)
    assert not done
    reql_server.drop_connections()
    with pytest.raises(ReqlDriverError, match="Connection is closed"):
        await asyncio.wait_for(lost, 5)
    reql_server.thaw()
    await client.close()
