"""Autoclean against RethinkDB: exactly the expired documents go (max_age, max_rows,
with and without an index; ReQL times and epoch numbers)."""

from __future__ import annotations

import time

import pytest

from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.autoclean import AutoClean, clean_table
from changeflow_channels.tables.config import parse_tables
from changeflow_channels.tables.ddl import TableRegistry

DAY = 86400


@pytest.fixture
async def db(ar, rethinkdb_target, dbname):
    """(driver, connection, database name)."""
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    yield ar, conn, dbname
    await conn.close(noreply_wait=False)


async def make_table(r, conn, config) -> None:
    await TableRegistry(r, {(config.database, config.table): config}).ensure(
        conn, config.database, config.table
    )


def config_for(dbname: str, spec: dict, table: str = "t"):
    return parse_tables({f"{dbname}.{table}": spec})[(dbname, table)]


async def ids(r, conn, dbname: str, table: str = "t") -> list:
    return sorted(await r.db(dbname).table(table)["id"].coerce_to("array").run(conn))


@pytest.mark.parametrize("indexed", [True, False], ids=["index", "scan"])
async def test_max_age_deletes_exactly_the_expired_documents(db, indexed):
    r, conn, dbname = db
    spec = {"retention": {"field": "created", "max_age": DAY}}
    if indexed:
        spec["indexes"] = ["created"]
    config = config_for(dbname, spec)
    await make_table(r, conn, config)
    now = time.time()
    docs = [
        # ReQL times, compared with the server's r.now()
        {"id": "time-old", "created": r.now().sub(DAY + 60)},
        {"id": "time-ancient", "created": r.epoch_time(0)},
        {"id": "time-fresh", "created": r.now().sub(DAY - 60)},
        {"id": "time-now", "created": r.now()},
        # epoch numbers, compared with time.time()
        {"id": "num-old", "created": now - DAY - 60},
        {"id": "num-zero", "created": 0},
        {"id": "num-fresh", "created": now - DAY + 60},
        # anything else is kept
        {"id": "no-field"},
        {"id": "null", "created": None},
        {"id": "text", "created": "2001-01-01"},
        {"id": "bool", "created": False},
    ]
    await r.db(dbname).table("t").insert(docs).run(conn)
    result = await clean_table(r, conn, config)
    assert result.error is None and result.indexed is indexed
    assert result.deleted == 4
    assert await ids(r, conn, dbname) == sorted(
        ["time-fresh", "time-now", "num-fresh", "no-field", "null", "text", "bool"]
    )
    again = await clean_table(r, conn, config)
    assert again.deleted == 0


@pytest.mark.parametrize("indexed", [True, False], ids=["index", "scan"])
async def test_max_rows_keeps_the_newest(db, indexed):
    r, conn, dbname = db
    spec = {"retention": {"field": "at", "max_rows": 5}}
    if indexed:
        spec["indexes"] = ["at"]
    config = config_for(dbname, spec)
    await make_table(r, conn, config)
    docs = [{"id": n, "at": r.epoch_time(1_700_000_000 + n * 17 % 23)} for n in range(23)]
    docs.append({"id": "no-at"})
    await r.db(dbname).table("t").insert(docs).run(conn)
    newest = sorted(range(23), key=lambda n: n * 17 % 23)[-5:]
    result = await clean_table(r, conn, config, batch=4)  # several batches
    assert result.error is None and result.indexed is indexed
    assert result.deleted == 18
    remaining = await r.db(dbname).table("t")["id"].coerce_to("array").run(conn)
    assert sorted(remaining, key=str) == sorted([*newest, "no-at"], key=str)


async def test_large_deletes_go_in_batches(db):
    r, conn, dbname = db
    config = config_for(dbname, {"indexes": ["n"], "retention": {"field": "n", "max_age": 10}})
    await make_table(r, conn, config)
    await r.db(dbname).table("t").insert([{"n": n} for n in range(250)]).run(conn)
    result = await clean_table(r, conn, config, batch=100)
    assert result.deleted == 250
    assert await r.db(dbname).table("t").count().run(conn) == 0


async def test_a_configured_index_missing_on_the_table_falls_back_to_a_scan(db):
    r, conn, dbname = db
    config = config_for(dbname, {"indexes": ["at"], "retention": {"field": "at", "max_rows": 1}})
    await r.db(dbname).table_create("t").run(conn)  # without the index
    await r.db(dbname).table("t").insert([{"at": 1}, {"at": 2}, {"at": 3}]).run(conn)
    result = await clean_table(r, conn, config)
    assert (result.indexed, result.deleted) == (False, 2)
    assert await r.db(dbname).table("t")["at"].coerce_to("array").run(conn) == [3]


async def test_a_missing_table_is_nothing_to_clean(db):
    r, conn, dbname = db
    config = config_for(dbname, {"retention": {"field": "at", "max_rows": 1}}, table="absent")
    result = await clean_table(r, conn, config)
    assert result.missing and result.error is None and result.deleted == 0
    assert "no such table" in result.describe(config.retention)


async def test_the_background_clean_runs_each_round(db, rethinkdb_target):
    r, conn, dbname = db
    configs = parse_tables({f"{dbname}.t": {"retention": {"field": "n", "max_rows": 2}}})
    await make_table(r, conn, configs[(dbname, "t")])
    await r.db(dbname).table("t").insert([{"n": n} for n in range(5)]).run(conn)
    clean = AutoClean(r, parse_rethinkdb_url(rethinkdb_target.url), configs, every=3600)
    [result] = await clean.clean_once()
    assert result.deleted == 3
    assert sorted(await r.db(dbname).table("t")["n"].coerce_to("array").run(conn)) == [3, 4]
