"""What an error means, decided by asking RethinkDB, not by reading the error's text
(issue 13): a refused create of what exists now is success, a refused write on a
missing table creates it, a query on a closed connection is a lost connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from rethinkdb.errors import ReqlError, ReqlOpFailedError

from changeflow_channels.mirror.backfill import ensure_table
from changeflow_channels.pushes import parse_push
from changeflow_channels.rethink import Reconnecting, is_connection_error
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.autoclean import clean_table
from changeflow_channels.tables.config import parse_tables
from changeflow_channels.tables.ddl import (
    TableRegistry,
    create_indexes,
    create_table,
    database_exists,
    table_exists,
)
from changeflow_channels.worker.push_writer import PushWriter

RACERS = 4


@pytest.fixture
async def conns(ar, rethinkdb_target) -> AsyncIterator[list]:
    opened = [await ar.connect(**rethinkdb_target.connect_kwargs()) for _ in range(RACERS)]
    yield opened
    for conn in opened:
        await conn.close(noreply_wait=False)


@pytest.fixture
async def fresh_db(ar, rethinkdb_target, dbname) -> AsyncIterator[str]:
    """A database name nobody created yet (dropped afterwards if a test did)."""
    name = dbname + "_new"
    yield name
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    if await database_exists(ar, conn, name):
        await ar.db_drop(name).run(conn)
    await conn.close(noreply_wait=False)


async def test_exists_answers_for_missing_databases_and_tables(ar, conns, dbname, fresh_db):
    conn = conns[0]
    await ar.db(dbname).table_create("t").run(conn)
    assert await database_exists(ar, conn, dbname)
    assert not await database_exists(ar, conn, fresh_db)
    assert await table_exists(ar, conn, dbname, "t")
    assert not await table_exists(ar, conn, dbname, "absent")
    assert not await table_exists(ar, conn, fresh_db, "t")


async def test_create_table_racing_itself_succeeds_everywhere(ar, conns, fresh_db):
    await asyncio.gather(*(create_table(ar, conn, fresh_db, "t") for conn in conns))
    assert await ar.db(fresh_db).table_list().run(conns[0]) == ["t"]
    assert (await ar.db(fresh_db).table("t").insert({"id": 1}).run(conns[0]))["inserted"] == 1


async def test_create_indexes_racing_itself_succeeds_everywhere(ar, conns, dbname):
    config = parse_tables({f"{dbname}.t": {"indexes": ["at"]}})[(dbname, "t")]
    await ar.db(dbname).table_create("t").run(conns[0])
    results = await asyncio.gather(*(create_indexes(ar, conn, config) for conn in conns))
    assert results == [["at"]] * RACERS
    assert await ar.db(dbname).table("t").index_list().run(conns[0]) == ["at"]


async def test_the_syncs_ensure_table_racing_itself_succeeds_everywhere(ar, conns, fresh_db):
    await asyncio.gather(*(ensure_table(ar, conn, fresh_db, "t") for conn in conns))
    assert await ar.db(fresh_db).table_list().run(conns[0]) == ["t"]


async def test_a_push_into_a_missing_database_creates_it_and_its_table(
    ar, conns, rethinkdb_target, fresh_db
):
    writer = PushWriter(
        Reconnecting(ar, parse_rethinkdb_url(rethinkdb_target.url)), TableRegistry(ar), 5.0
    )
    try:
        request = parse_push({"database": fresh_db, "table": "t", "data": {"id": 1}})
        result = await writer.write(request)
        assert result["ok"] and result["inserted"] == 1
        counts = await writer.insert_once(fresh_db, "u", [{"id": 2}])
        assert counts["inserted"] == 1
    finally:
        await writer.connection.close()
    assert sorted(await ar.db(fresh_db).table_list().run(conns[0])) == ["t", "u"]


async def test_autoclean_of_a_table_in_a_missing_database_is_nothing_to_clean(ar, conns, fresh_db):
    config = parse_tables({f"{fresh_db}.t": {"retention": {"field": "at", "max_rows": 1}}})[
        (fresh_db, "t")
    ]
    result = await clean_table(ar, conns[0], config)
    assert result.missing and result.error is None


async def test_a_cursor_on_a_closed_connection_is_a_lost_connection(ar, rethinkdb_target, dbname):
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    await ar.db(dbname).table_create("t").run(conn)
    cursor = await ar.db(dbname).table("t").changes().run(conn)
    waiting = asyncio.ensure_future(cursor.next())
    await asyncio.sleep(0.1)
    await conn.close(noreply_wait=False)
    with pytest.raises(ReqlError) as raised:
        await waiting
    assert is_connection_error(raised.value, conn)


async def test_a_refused_query_on_an_open_connection_is_not_a_lost_connection(
    ar, rethinkdb_target, dbname
):
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        with pytest.raises(ReqlOpFailedError) as raised:
            await ar.db(dbname).table("absent").run(conn)
        assert not is_connection_error(raised.value, conn)
        assert not is_connection_error(raised.value)
    finally:
        await conn.close(noreply_wait=False)
