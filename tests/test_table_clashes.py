"""Two tables of one name (racing ``table_create``): the worker keeps one.

A real RethinkDB makes several tables when clients create one name at the same
moment; the test server never does (its creates are serial), so there these
tests show only that nothing is repaired that needs no repair.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from changeflow_channels.conf import get_settings
from changeflow_channels.tables.ddl import create_table, repair_table, table_ids
from changeflow_channels.worker.flow import Flow

from .polling import poll_until

RACERS = 4


@pytest.fixture
async def racers(rethinkdb_target, ar) -> AsyncIterator[list]:
    conns = [await ar.connect(**rethinkdb_target.connect_kwargs()) for _ in range(RACERS)]
    yield conns
    for conn in conns:
        await conn.close(noreply_wait=False)


async def race_to_create(ar, racers, dbname: str, table: str) -> None:
    """Create ``table`` from every connection at once (some may fail: "already exists")."""
    await asyncio.gather(
        *(ar.db(dbname).table_create(table).run(conn) for conn in racers), return_exceptions=True
    )


async def test_racing_creates_are_repaired_to_one_working_table(ar, racers, dbname):
    conn = racers[0]
    await race_to_create(ar, racers, dbname, "t")
    made = len(await table_ids(ar, conn, dbname, "t"))
    assert await repair_table(ar, conn, dbname, "t") is (made > 1)
    assert len(await table_ids(ar, conn, dbname, "t")) == 1
    await ar.db(dbname).table("t").insert({"id": 1}).run(conn)
    assert await ar.db(dbname).table("t").count().run(conn) == 1
    # Nothing is left of the extra tables.
    assert await ar.db(dbname).table_list().run(conn) == ["t"]


async def test_create_table_racing_other_clients_leaves_one_table(ar, racers, dbname):
    conn = racers[0]
    await asyncio.gather(
        race_to_create(ar, racers[1:], dbname, "t"),
        create_table(ar, conn, dbname, "t"),
    )
    # create_table repairs what it sees; a creator slower than its check is
    # repaired by the worker's discovery (next test). Either way: one table.
    await repair_table(ar, conn, dbname, "t")
    assert await ar.db(dbname).table_list().run(conn) == ["t"]


async def test_the_worker_repairs_a_clash_it_discovers_and_follows_the_table(
    rethinkdb_target, ar, racers, dbname
):
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CHANGEFLOW_RETHINKDB=rethinkdb_target.url,
        CHANGEFLOW_WATCH=[f"{dbname}.*"],
    ):
        flow = Flow(get_settings(), get_channel_layer(), [])
    await flow.start()
    try:
        assert await flow.wait_ready(timeout=20)
        await race_to_create(ar, racers, dbname, "t")
        stream = f"{dbname}.t"

        async def state() -> tuple[list[str], bool]:
            entry = flow.feeds.get(stream)
            opened = entry is not None and entry[0].caught_up
            return await ar.db(dbname).table_list().run(racers[0]), opened

        # The repair renames the extras first (one table has the name at once),
        # then copies their documents and drops them: wait for all of it.
        await poll_until(
            state, lambda s: s == (["t"], True), 30, lambda s: f"(tables, feed open): {s}"
        )
        # The renamed extras were never followed as streams of their own.
        assert set(flow.feeds) == {stream}
    finally:
        await flow.stop()
