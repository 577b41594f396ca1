"""CHANGEFLOW_TABLES in the real worker and the ``changeflow clean`` command.

Workers here get a channel and a watched database of their own, so the
suite's other workers never take their pushes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from changeflow_channels.testing.processes import ManagedProcess, free_port

from .conftest import REPO
from .helpers import receive
from .test_flow import push

KEYS = {"primary_key": "uid", "indexes": ["created"]}


@pytest.fixture
def tables_env(stream_db):
    """The env for a worker of the test's own, given its CHANGEFLOW_TABLES."""
    channel = "cf-" + uuid.uuid4().hex[:8]

    def env(tables: dict, **more: str) -> dict[str, str]:
        return {
            "CHANGEFLOW_TEST_CHANNEL": channel,
            "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
            "CHANGEFLOW_TEST_HANDLERS": "",
            "CHANGEFLOW_TEST_TABLES": json.dumps(tables),
            **more,
        }

    env.channel = channel
    return env


@pytest.fixture
async def rconn(ar, rethinkdb_target):
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    yield conn
    await conn.close(noreply_wait=False)


async def keys_and_indexes(r, conn, database: str, table: str) -> tuple[str, list[str]]:
    t = r.db(database).table(table)
    await t.index_wait().run(conn)
    return (await t.config().run(conn))["primary_key"], sorted(await t.index_list().run(conn))


async def test_the_worker_creates_configured_tables_and_new_indexes_on_the_next_start(
    worker_factory, tables_env, stream_db, ar, rconn
):
    tables = {f"{stream_db}.t": KEYS}
    first = worker_factory(**tables_env(tables))
    assert await keys_and_indexes(ar, rconn, stream_db, "t") == ("uid", ["created"])
    await ar.db(stream_db).table("t").insert({"uid": "keep", "created": 1}).run(rconn)
    assert first.stop() == 0
    compound = ["by_user_and_day", ["user", "day"]]
    tables[f"{stream_db}.t"] = {**KEYS, "indexes": ["created", compound]}
    second = worker_factory(**tables_env(tables))
    assert await keys_and_indexes(ar, rconn, stream_db, "t") == (
        "uid",
        ["by_user_and_day", "created"],
    )
    assert await ar.db(stream_db).table("t").count().run(rconn) == 1  # data kept
    assert "created index by_user_and_day" in second.output
    assert "created index created" not in second.output  # the existing one left alone
    second.stop()


async def test_a_push_recreating_a_configured_table_uses_its_key_and_indexes(
    worker_factory, tables_env, stream_db, ar, rconn, layer
):
    worker = worker_factory(**tables_env({f"{stream_db}.t": KEYS}))
    await ar.db(stream_db).table_drop("t").run(rconn)
    reply = await layer.new_channel()
    await layer.send(tables_env.channel, push(stream_db, "t", {"n": 1}, reply_channel=reply))
    answer = await receive(layer, reply)
    assert answer["ok"] is True, answer
    [key] = answer["generated_keys"]
    assert await keys_and_indexes(ar, rconn, stream_db, "t") == ("uid", ["created"])
    assert await ar.db(stream_db).table("t").get(key).run(rconn) == {"uid": key, "n": 1}
    # A table not in the settings gets RethinkDB's defaults.
    await layer.send(tables_env.channel, push(stream_db, "other", {"n": 1}, reply_channel=reply))
    assert (await receive(layer, reply))["ok"] is True
    assert await keys_and_indexes(ar, rconn, stream_db, "other") == ("id", [])
    worker.stop()


async def test_a_table_with_another_primary_key_is_left_alone(
    worker_factory, tables_env, stream_db, ar, rconn
):
    await ar.db_create(stream_db).run(rconn)
    await ar.db(stream_db).table_create("t").run(rconn)
    worker = worker_factory(**tables_env({f"{stream_db}.t": KEYS}))
    assert await keys_and_indexes(ar, rconn, stream_db, "t") == ("id", [])
    assert f"table {stream_db}.t has primary key 'id', but CHANGEFLOW_TABLES says 'uid'" in (
        worker.output
    )
    worker.stop()


async def test_the_worker_cleans_every_clean_every_seconds(
    worker_factory, tables_env, stream_db, ar, rconn
):
    tables = {f"{stream_db}.t": {"indexes": ["n"], "retention": {"field": "n", "max_rows": 3}}}
    worker = worker_factory(**tables_env(tables, CHANGEFLOW_TEST_CLEAN_EVERY="0.2"))
    table = ar.db(stream_db).table("t")
    feed = await table.changes().run(rconn)
    await table.insert([{"id": n, "n": n} for n in range(10)]).run(rconn)
    removed = []
    while len(removed) < 7:
        change = await asyncio.wait_for(feed.next(), 15)
        if change["new_val"] is None:
            removed.append(change["old_val"]["id"])
    await feed.close()
    assert sorted(removed) == list(range(7))
    assert sorted(await table["id"].coerce_to("array").run(rconn)) == [7, 8, 9]
    worker.wait_for(
        rf"autoclean: {stream_db}\.t: deleted \d+ .*by index", timeout=5, from_start=True
    )
    worker.stop()


# -- manage.py changeflow clean ----------------------------------------------------------


def clean(process_env, tables: dict, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "django", "changeflow", "clean", *args],
        env={**os.environ, **process_env, "CHANGEFLOW_TEST_TABLES": json.dumps(tables), **env},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def expired(ar, rconn, stream_db):
    """Two tables with expired documents: ``aged`` (max_age, index), ``capped`` (max_rows, scan)."""
    tables = {
        f"{stream_db}.aged": {
            "indexes": ["created"],
            "retention": {"field": "created", "max_age": 3600},
        },
        f"{stream_db}.capped": {"retention": {"field": "at", "max_rows": 2}},
    }
    await ar.db_create(stream_db).run(rconn)
    for name in ("aged", "capped"):
        await ar.db(stream_db).table_create(name).run(rconn)
    await ar.db(stream_db).table("aged").index_create("created").run(rconn)
    await ar.db(stream_db).table("aged").index_wait().run(rconn)

    async def fill() -> None:
        old, fresh = ar.now().sub(7200), ar.now()
        await (
            ar.db(stream_db)
            .table("aged")
            .insert([{"created": old}, {"created": old}, {"created": fresh}])
            .run(rconn)
        )
        await ar.db(stream_db).table("capped").insert([{"at": n} for n in range(5)]).run(rconn)

    await fill()
    return tables, fill


async def test_clean_once_deletes_and_reports(process_env, expired, ar, rconn, stream_db):
    tables, _ = expired
    done = await asyncio.to_thread(clean, process_env, tables)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{stream_db}.aged: deleted 2 (older than 3600 s by `created`, by index)",
        f"{stream_db}.capped: deleted 3 (beyond the newest 2 by `at`, by scan)",
    ]
    assert await ar.db(stream_db).table("aged").count().run(rconn) == 1
    assert sorted(await ar.db(stream_db).table("capped")["at"].coerce_to("array").run(rconn)) == [
        3,
        4,
    ]
    quiet = await asyncio.to_thread(clean, process_env, tables, "-q")
    assert quiet.returncode == 0 and quiet.stdout == ""


async def test_clean_at_an_interval_until_interrupted(process_env, expired, stream_db):
    tables, fill = expired
    process = ManagedProcess(
        [sys.executable, "-m", "django", "changeflow", "clean", "-s", "0.005"],
        env={**process_env, "CHANGEFLOW_TEST_TABLES": json.dumps(tables)},
        cwd=str(REPO),
    )
    try:
        await asyncio.to_thread(process.wait_for, rf"{stream_db}\.capped: deleted 3", 30)
        await fill()  # expired again: the next rounds delete these too
        await asyncio.to_thread(process.wait_for, rf"{stream_db}\.aged: deleted 2", 30)
        await asyncio.to_thread(process.wait_for, rf"{stream_db}\.capped: deleted 5", 30)
        process.signal(signal.SIGINT)
        assert await asyncio.to_thread(process.process.wait, 10) == 0, process.output
    finally:
        process.stop()


@pytest.mark.parametrize(
    ("tables", "env", "message"),
    [
        ({"db.t": {"indexes": ["a"]}}, {}, "no table in CHANGEFLOW_TABLES has a retention"),
        ({"db.t": {"pk": "x"}}, {}, "unknown key(s) 'pk'"),
        (
            {"db.t": {"retention": {"field": "a", "max_rows": 1}}},
            {"CHANGEFLOW_TEST_RETHINKDB_URL": f"rethinkdb://admin@127.0.0.1:{free_port()}"},
            "cannot reach RethinkDB",
        ),
    ],
    ids=["no retention", "bad setting", "rethinkdb down"],
)
def test_clean_fails_with_a_clear_message(process_env, tables, env, message):
    done = clean(process_env, tables, **env)
    assert done.returncode != 0
    assert message in done.stderr
