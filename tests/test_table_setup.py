"""CHANGEFLOW_TABLES against RethinkDB: tables get their primary key and indexes
(at start-up, when a push creates them), missing indexes are added, existing ones
and tables with another primary key are left alone; a RethinkDB that is down at
start-up is waited for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from changeflow_channels.pushes import parse_push
from changeflow_channels.rethink import Reconnecting, new_driver
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.config import parse_tables
from changeflow_channels.tables.ddl import TableRegistry, create_indexes
from changeflow_channels.tables.setup import TableSetup
from changeflow_channels.worker.push_writer import PushWriter

from .conftest import USING_REAL_RETHINKDB
from .polling import LogEvent

SPEC = {
    "primary_key": "uid",
    "indexes": ["created", ["by_user_and_day", ["user", "day"]]],
}


@pytest.fixture
async def db(ar, rethinkdb_target, dbname):
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    yield ar, conn, dbname
    await conn.close(noreply_wait=False)


@pytest.fixture
async def log_event():
    logger = logging.getLogger("changeflow_channels")
    handlers = []

    def watch(text: str) -> LogEvent:
        handler = LogEvent(text)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield watch
    logger.setLevel(old_level)
    for handler in handlers:
        logger.removeHandler(handler)


async def assert_configured(r, conn, dbname: str, table: str = "t") -> None:
    """Primary key ``uid``; ``created`` and the compound index work."""
    t = r.db(dbname).table(table)
    assert (await t.config().run(conn))["primary_key"] == "uid"
    await t.index_wait().run(conn)
    assert sorted(await t.index_list().run(conn)) == ["by_user_and_day", "created"]
    await t.insert(
        [
            {"uid": "a", "user": "ann", "day": 1, "created": 10},
            {"uid": "b", "user": "ann", "day": 2, "created": 20},
        ]
    ).run(conn)
    found = await t.get_all(["ann", 2], index="by_user_and_day").coerce_to("array").run(conn)
    assert [doc["uid"] for doc in found] == ["b"]
    found = await t.between(15, 30, index="created").coerce_to("array").run(conn)
    assert [doc["uid"] for doc in found] == ["b"]


async def test_ensure_creates_a_configured_table_with_its_key_and_indexes(db):
    r, conn, dbname = db
    registry = TableRegistry(r, parse_tables({f"{dbname}.t": SPEC}))
    await registry.ensure(conn, dbname, "t")
    await assert_configured(r, conn, dbname)


async def test_ensure_uses_rethinkdbs_defaults_for_other_tables(db):
    r, conn, dbname = db
    registry = TableRegistry(r, parse_tables({f"{dbname}.t": SPEC}))
    await registry.ensure(conn, dbname, "other")
    other = r.db(dbname).table("other")
    assert (await other.config().run(conn))["primary_key"] == "id"
    assert await other.index_list().run(conn) == []


async def test_a_push_creating_a_configured_table_uses_its_key_and_indexes(rethinkdb_target, db):
    r, conn, dbname = db
    driver = new_driver()
    tables = TableRegistry(driver, parse_tables({f"{dbname}.t": SPEC}))
    writer = PushWriter(Reconnecting(driver, parse_rethinkdb_url(rethinkdb_target.url)), tables, 10)
    try:
        request = parse_push({"database": dbname, "table": "t", "data": {"message": "hi"}})
        result = await writer.write(request)
    finally:
        await writer.connection.close()
    assert result["ok"] is True, result
    [key] = result["generated_keys"]
    [doc] = await r.db(dbname).table("t").coerce_to("array").run(conn)
    assert doc == {"uid": key, "message": "hi"}  # the worker's key, under the configured pk
    await r.db(dbname).table("t").delete().run(conn)
    await assert_configured(r, conn, dbname)


async def test_missing_indexes_are_added_and_existing_ones_left_alone(db):
    r, conn, dbname = db
    t = r.db(dbname).table("t")
    await r.db(dbname).table_create("t", primary_key="uid").run(conn)
    # An index named "created" on another field: the user's own, not ours to change.
    await t.index_create("created", lambda doc: doc["other"]).run(conn)
    names = await create_indexes(r, conn, parse_tables({f"{dbname}.t": SPEC})[(dbname, "t")])
    assert names == ["created", "by_user_and_day"]
    await t.index_wait().run(conn)
    assert sorted(await t.index_list().run(conn)) == ["by_user_and_day", "created"]
    await t.insert({"uid": 1, "other": 5, "created": 99}).run(conn)
    assert await t.get_all(5, index="created").count().run(conn) == 1


async def test_a_table_with_another_primary_key_is_not_touched(db, log_event):
    r, conn, dbname = db
    await r.db(dbname).table_create("t").run(conn)  # primary key "id"
    logged = log_event("has primary key 'id', but CHANGEFLOW_TABLES says 'uid'")
    config = parse_tables({f"{dbname}.t": SPEC})[(dbname, "t")]
    assert await create_indexes(r, conn, config) is None
    assert logged.seen
    assert await r.db(dbname).table("t").index_list().run(conn) == []


async def test_set_up_creates_tables_and_adds_a_new_index_on_the_next_run(db, rethinkdb_target):
    r, conn, dbname = db
    address = parse_rethinkdb_url(rethinkdb_target.url)
    first = TableSetup(new_driver(), address, parse_tables({f"{dbname}.t": {"primary_key": "uid"}}))
    await asyncio.wait_for(first.run(), 10)
    assert first.created.is_set() and first.ready.is_set()
    assert await r.db(dbname).table("t").index_list().run(conn) == []
    second = TableSetup(new_driver(), address, parse_tables({f"{dbname}.t": SPEC}))
    await asyncio.wait_for(second.run(), 10)
    await assert_configured(r, conn, dbname)


async def test_set_up_waits_for_a_rethinkdb_that_is_down_at_start(faulty_rethinkdb, log_event):
    unavailable = log_event("setting up CHANGEFLOW_TABLES: RethinkDB unavailable")
    faulty_rethinkdb.stop(keep_data=False)
    setup = TableSetup(
        new_driver(), parse_rethinkdb_url(faulty_rethinkdb.url), parse_tables({"shop.orders": SPEC})
    )
    task = asyncio.ensure_future(setup.run())
    try:
        await asyncio.wait_for(unavailable.event.wait(), 10)
        assert not setup.created.is_set()
        faulty_rethinkdb.start()
        assert await asyncio.wait_for(setup.wait_ready(), 15)
    finally:
        setup.stop()
        await asyncio.wait_for(task, 5)
    r = new_driver()
    conn = await r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port)
    try:
        await assert_configured(r, conn, "shop", "orders")
    finally:
        await conn.close(noreply_wait=False)


async def test_set_up_stops_promptly_while_rethinkdb_is_down(faulty_rethinkdb):
    faulty_rethinkdb.stop(keep_data=False)
    setup = TableSetup(
        new_driver(), parse_rethinkdb_url(faulty_rethinkdb.url), parse_tables({"shop.orders": SPEC})
    )
    task = asyncio.ensure_future(setup.run())
    waiting = asyncio.ensure_future(setup.wait_created())
    setup.stop()
    await asyncio.wait_for(task, 5)
    assert await asyncio.wait_for(waiting, 1) is False


class DropsWhileWaiting(TableSetup):
    """Every client connection drops just as the first wait for indexes begins."""

    def __init__(self, faulty, *args) -> None:
        super().__init__(*args)
        self.faulty = faulty
        self.dropped = False

    async def _wait(self, conn, config, names) -> None:
        if not self.dropped:
            self.dropped = True
            await asyncio.to_thread(self.faulty.drop_connections)
        await super()._wait(conn, config, names)


async def test_set_up_recovers_when_the_connection_drops_while_waiting_for_indexes(
    faulty_rethinkdb, log_event
):
    """Issue 14, case 8: the tables were created, the connection dropped during the
    wait for indexes; the next session must reconnect (it once connected only while
    tables were left to create, so the wait failed forever and autoclean never ran)."""
    lost = log_event("setting up CHANGEFLOW_TABLES")
    setup = DropsWhileWaiting(
        faulty_rethinkdb,
        new_driver(),
        parse_rethinkdb_url(faulty_rethinkdb.url),
        parse_tables({"shop.orders": SPEC}),
    )
    task = asyncio.ensure_future(setup.run())
    try:
        assert await asyncio.wait_for(setup.wait_ready(), 30)
    finally:
        setup.stop()
        await asyncio.wait_for(task, 5)
    assert setup.dropped and lost.seen  # the wait really lost its connection
    r = new_driver()
    conn = await r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port)
    try:
        await assert_configured(r, conn, "shop", "orders")
    finally:
        await conn.close(noreply_wait=False)


@pytest.mark.skipif(not USING_REAL_RETHINKDB, reason="the ReQL test server has one shard per table")
async def test_a_configured_table_is_created_with_its_shards(db):
    r, conn, dbname = db
    registry = TableRegistry(r, parse_tables({f"{dbname}.t": {"shards": 2, "replicas": 1}}))
    await registry.ensure(conn, dbname, "t")
    config = await r.db(dbname).table("t").config().run(conn)
    assert [len(shard["replicas"]) for shard in config["shards"]] == [1, 1]
