"""Unit tests of the ReQL test server's query engine, without any connection:
queries are built with the official driver and run through ``Engine.run``."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.testing.reql_datum import pretty, reql_cmp
from changeflow_channels.testing.reql_engine import Engine
from changeflow_channels.testing.reql_errors import (
    ReqlCompileError,
    ReqlNonExistenceError,
    ReqlOpFailedError,
    ReqlQueryLogicError,
    ReqlUserError,
)
from changeflow_channels.testing.reql_results import Atom, Sequence

r = RethinkDB()
GLOBAL = {"db": r.db("test").build()}
COUNTS = {"deleted": 0, "errors": 0, "inserted": 0, "replaced": 0, "skipped": 0, "unchanged": 0}


def counts(**changed: Any) -> dict[str, Any]:
    return {**COUNTS, **changed}


@pytest.fixture
def engine() -> Engine:
    return Engine()


async def run(engine: Engine, query: Any) -> Any:
    result = await engine.run(query.build(), GLOBAL)
    if isinstance(result, Atom):
        return result.value
    if isinstance(result, Sequence):
        return result.items
    return result


@pytest.fixture
async def table(engine: Engine) -> str:
    await run(engine, r.table_create("t"))
    await run(engine, r.table("t").insert([{"id": i, "v": i % 3} for i in range(1, 6)]))
    return "t"


# -- administration -------------------------------------------------------------------


async def test_fresh_engine_has_test_db(engine: Engine) -> None:
    assert await run(engine, r.db_list()) == ["rethinkdb", "test"]
    assert await run(engine, r.table_list()) == []
    assert "table_config" in await run(engine, r.db("rethinkdb").table_list())


async def test_table_create_result_and_errors(engine: Engine) -> None:
    result = await run(engine, r.table_create("a", primary_key="k"))
    assert result["tables_created"] == 1
    row = result["config_changes"][0]["new_val"]
    assert result["config_changes"][0]["old_val"] is None
    assert row["primary_key"] == "k" and row["name"] == "a" and row["db"] == "test"
    assert await run(engine, r.table("a").config()) == row
    with pytest.raises(ReqlOpFailedError, match=r"^Table `test.a` already exists.$"):
        await run(engine, r.table_create("a"))
    with pytest.raises(ReqlOpFailedError, match=r"^Database `x` does not exist.$"):
        await run(engine, r.db("x").table_create("a"))
    with pytest.raises(ReqlQueryLogicError, match=r"Table name `bad name` invalid"):
        await run(engine, r.table_create("bad name"))
    with pytest.raises(ReqlOpFailedError, match=r"^Table `test.nope` does not exist.$"):
        await run(engine, r.table("nope"))
    assert await run(engine, r.table("a").wait()) == {"ready": 1}
    assert (await run(engine, r.table_drop("a")))["tables_dropped"] == 1


async def test_db_create_drop(engine: Engine) -> None:
    assert (await run(engine, r.db_create("d")))["dbs_created"] == 1
    with pytest.raises(ReqlOpFailedError, match=r"^Database `d` already exists.$"):
        await run(engine, r.db_create("d"))
    with pytest.raises(ReqlQueryLogicError, match=r"Database name `a b` invalid \(Use A-Z"):
        await run(engine, r.db_create("a b"))
    await run(engine, r.db("d").table_create("x"))
    assert await run(engine, r.db("d").table_list()) == ["x"]
    result = await run(engine, r.db_drop("d"))
    assert result["dbs_dropped"] == 1 and result["tables_dropped"] == 1
    assert await run(engine, r.db_list()) == ["rethinkdb", "test"]


async def test_indexes(engine: Engine, table: str) -> None:
    assert await run(engine, r.table(table).index_create("v")) == {"created": 1}
    await run(engine, r.table(table).index_create("double", lambda d: d["v"] * 2))
    assert await run(engine, r.table(table).index_list()) == ["double", "v"]
    status = await run(engine, r.table(table).index_wait("v"))
    assert status[0]["index"] == "v" and status[0]["ready"] is True
    assert status[0]["function"]["$reql_type$"] == "BINARY"
    docs = await run(engine, r.table(table).get_all(2, index="v"))
    assert sorted(d["id"] for d in docs) == [2, 5]
    docs = await run(engine, r.table(table).get_all(4, index="double"))
    assert sorted(d["id"] for d in docs) == [2, 5]
    ordered = await run(engine, r.table(table).order_by(index="v").pluck("id"))
    assert [d["id"] for d in ordered] == [3, 1, 4, 2, 5]
    with pytest.raises(ReqlOpFailedError, match=r"^Index `v` already exists on table `test.t`.$"):
        await run(engine, r.table(table).index_create("v"))
    await run(engine, r.table(table).index_drop("v"))
    with pytest.raises(ReqlOpFailedError, match=r"^Index `v` does not exist on table `test.t`.$"):
        await run(engine, r.table(table).index_drop("v"))
    with pytest.raises(ReqlOpFailedError, match=r"^Index `v` was not found on table `test.t`.$"):
        await run(engine, r.table(table).index_wait("v"))
    # The index follows writes.
    await run(engine, r.table(table).get(2).update({"v": 7}))
    docs = await run(engine, r.table(table).get_all(14, index="double"))
    assert [d["id"] for d in docs] == [2]


# -- writes ---------------------------------------------------------------------------


async def test_insert_results(engine: Engine, table: str) -> None:
    result = await run(engine, r.table(table).insert({"v": 1}))
    assert set(result) == {*COUNTS, "generated_keys"} and result["inserted"] == 1
    key = result["generated_keys"][0]
    assert (await run(engine, r.table(table).get(key)))["v"] == 1
    result = await run(engine, r.table(table).insert({"id": 1, "v": 2}))
    assert result == counts(
        errors=1,
        first_error='Duplicate primary key `id`:\n{\n\t"id":\t1,\n\t"v":\t1\n}\n'
        '{\n\t"id":\t1,\n\t"v":\t2\n}',
    )
    result = await run(engine, r.table(table).insert({"id": 1, "v": 2}, conflict="replace"))
    assert result == counts(replaced=1)
    result = await run(
        engine, r.table(table).insert({"id": 1, "w": 3}, conflict="update", return_changes=True)
    )
    assert result == counts(
        replaced=1, changes=[{"new_val": {"id": 1, "v": 2, "w": 3}, "old_val": {"id": 1, "v": 2}}]
    )
    result = await run(
        engine, r.table(table).insert({"id": 1, "w": 3}, conflict="update", return_changes=True)
    )
    assert result == counts(unchanged=1, changes=[])
    with pytest.raises(ReqlQueryLogicError, match=r"^Cannot convert STRING to SEQUENCE$"):
        await run(engine, r.table(table).insert("x"))
    result = await run(engine, r.table(table).insert(["x"]))
    assert result == counts(errors=1, first_error="Expected type OBJECT but found STRING.")


async def test_update_replace_delete(engine: Engine, table: str) -> None:
    t = r.table(table)
    assert await run(engine, t.get(1).update({"v": 9})) == counts(replaced=1)
    assert await run(engine, t.get(1).update({"v": 9})) == counts(unchanged=1)
    assert await run(engine, t.get(99).update({"v": 9})) == counts(skipped=1)
    assert await run(engine, t.get(99).delete()) == counts(skipped=1)
    result = await run(engine, t.filter({"v": 2}).update(lambda d: {"v": d["v"] + 1}))
    assert result == counts(replaced=2)
    result = await run(engine, t.get(1).update({"id": 2}))
    assert result["errors"] == 1
    assert result["first_error"].startswith("Primary key `id` cannot be changed")
    assert await run(engine, t.get(3).replace({"id": 3, "x": 1})) == counts(replaced=1)
    assert await run(engine, t.get(3)) == {"id": 3, "x": 1}
    assert await run(engine, t.get(42).replace({"id": 42})) == counts(inserted=1)
    result = await run(engine, t.get(42).delete(return_changes=True))
    assert result == counts(deleted=1, changes=[{"new_val": None, "old_val": {"id": 42}}])
    assert await run(engine, t.get_all(1, 2).delete()) == counts(deleted=2)
    assert await run(engine, t.delete()) == counts(deleted=3)
    assert await run(engine, t.count()) == 0


# -- reads and expressions ----------------------------------------------------------------


async def test_filter_and_fields(engine: Engine, table: str) -> None:
    t = r.table(table)
    assert await run(engine, t.filter(r.row["v"] == 1).pluck("id").order_by("id")) == [
        {"id": 1},
        {"id": 4},
    ]
    assert await run(engine, t.filter(lambda d: (d["v"] > 0) & (d["id"] < 3)).count()) == 2
    assert await run(engine, t.filter(r.row["missing"] == 1).count()) == 0
    assert await run(engine, t.filter(r.row["missing"] == 1, default=True).count()) == 5
    with pytest.raises(ReqlUserError, match=r"^boom$"):
        await run(engine, t.filter(r.row["missing"] == 1, default=r.error("boom")))
    with pytest.raises(ReqlNonExistenceError, match=r"^No attribute `x` in object:\n"):
        await run(engine, t.get(1)["x"])
    assert await run(engine, t.get(1)["x"].default(7)) == 7
    assert await run(engine, t.get(77)) is None
    assert await run(engine, t.order_by(r.desc("id")).limit(2).skip(1)["id"]) == [4]
    assert await run(engine, t.map(lambda d: d["v"]).sum()) == 6
    assert await run(engine, t.max("v")) == {"id": 2, "v": 2}
    assert await run(engine, t.get(1).keys()) == ["id", "v"]
    assert await run(engine, t.between(2, 4).count()) == 2
    assert await run(engine, t.get(1).has_fields("v")) is True


async def test_expressions(engine: Engine) -> None:
    assert await run(engine, r.expr({"a": [1, 2]}).merge({"b": 1})) == {"a": [1, 2], "b": 1}
    assert await run(engine, r.expr([1, 2]).append(3).contains(3)) is True
    assert await run(engine, r.expr(1).do(lambda x: x + 1)) == 2
    assert await run(engine, r.branch(r.expr(1) > 2, "a", "b")) == "b"
    assert await run(engine, r.expr(7) % 3) == 1
    assert await run(engine, r.expr(6) / 3) == 2
    assert await run(engine, r.expr("1.5").coerce_to("number")) == 1.5
    assert await run(engine, r.expr([1, 2]).type_of()) == "ARRAY"
    assert await run(engine, r.expr({"a": 1, "b": 2}).without("a")) == {"b": 2}
    assert await run(engine, r.epoch_time(10).to_epoch_time()) == 10
    assert await run(engine, r.iso8601("2020-01-01T00:00:00Z").to_epoch_time()) == 1577836800
    assert await run(engine, r.binary(b"ab")) == {"$reql_type$": "BINARY", "data": "YWI="}
    assert len(await run(engine, r.uuid())) == 36
    now = await run(engine, r.expr([r.now(), r.now()]))
    assert now[0] == now[1] and now[0]["$reql_type$"] == "TIME"
    with pytest.raises(ReqlUserError, match=r"^nope$"):
        await run(engine, r.error("nope"))
    with pytest.raises(ReqlQueryLogicError, match=r"^Expected type NUMBER but found STRING.$"):
        await run(engine, r.expr(1) + "a")


async def test_compile_errors(engine: Engine) -> None:
    with pytest.raises(ReqlCompileError, match=r"^Term `JAVASCRIPT` is not supported"):
        await run(engine, r.js("1"))
    with pytest.raises(ReqlCompileError, match=r"^Expected 2 arguments but found 1.$"):
        await run(engine, r.table("t").get())
    # Nothing runs when part of the query does not compile.
    with pytest.raises(ReqlCompileError):
        await run(engine, r.expr([r.table_create("x"), r.js("1")]))
    assert await run(engine, r.table_list()) == []


def test_ordering() -> None:
    values = [
        "a",
        {"$reql_type$": "TIME", "epoch_time": 1, "timezone": "+00:00"},
        {"a": 1},
        2,
        1.5,
        None,
        True,
        False,
        [1],
    ]
    ordered = sorted(values, key=functools.cmp_to_key(reql_cmp))
    assert ordered == [[1], False, True, None, 1.5, 2, {"a": 1}, values[1], "a"]
    assert reql_cmp(1, 1.0) == 0
    assert pretty({"b": [1, 2], "a": {}}) == '{\n\t"a":\t{\n\t},\n\t"b":\t[1, 2]\n}'


# -- changefeeds ----------------------------------------------------------------------------


async def next_items(feed: Any) -> list:
    return await asyncio.wait_for(feed.next_batch(), 1)


async def test_table_feed(engine: Engine, table: str) -> None:
    feed = await engine.run(r.table(table).changes().build(), GLOBAL)
    assert feed.notes == [1] and feed.first_batch() == []
    await run(engine, r.table(table).insert([{"id": 10}, {"id": 11}]))
    await run(engine, r.table(table).get(10).update({"v": 1}))
    await run(engine, r.table(table).get(10).update({"v": 1}))  # no change, no item
    await run(engine, r.table(table).get(11).delete())
    assert await next_items(feed) == [
        {"new_val": {"id": 10}, "old_val": None},
        {"new_val": {"id": 11}, "old_val": None},
        {"new_val": {"id": 10, "v": 1}, "old_val": {"id": 10}},
        {"new_val": None, "old_val": {"id": 11}},
    ]
    feed.close()
    feed.close()
    assert await feed.next_batch() == []


async def test_feed_options(engine: Engine, table: str) -> None:
    query = r.table(table).changes(include_initial=True, include_states=True, include_types=True)
    feed = await engine.run(query.build(), GLOBAL)
    assert feed.notes == [1, 5]
    first = feed.first_batch()
    assert first[0] == {"state": "initializing", "type": "state"}
    assert first[-1] == {"state": "ready", "type": "state"}
    assert [d["new_val"]["id"] for d in first[1:-1]] == [1, 2, 3, 4, 5]
    assert all(d["type"] == "initial" and "old_val" not in d for d in first[1:-1])
    await run(engine, r.table(table).insert({"id": 6}))
    assert await next_items(feed) == [{"new_val": {"id": 6}, "old_val": None, "type": "add"}]
    plain = await engine.run(r.table(table).changes(include_states=True).build(), GLOBAL)
    assert plain.first_batch() == [{"state": "ready"}]


async def test_point_and_filter_feeds(engine: Engine, table: str) -> None:
    point = await engine.run(r.table(table).get(1).changes(include_initial=True).build(), GLOBAL)
    missing = await engine.run(r.table(table).get(9).changes(include_initial=True).build(), GLOBAL)
    assert point.notes == [2]
    assert point.first_batch() == [{"new_val": {"id": 1, "v": 1}}]
    assert missing.first_batch() == [{"new_val": None}]
    filtered = await engine.run(r.table(table).filter(r.row["v"] == 1).changes().build(), GLOBAL)
    await run(engine, r.table(table).get(2).update({"v": 1}))  # enters the filter
    await run(engine, r.table(table).get(1).update({"v": 0}))  # leaves it
    await run(engine, r.table(table).get(3).update({"v": 2}))  # never matches
    assert await next_items(filtered) == [
        {"new_val": {"id": 2, "v": 1}, "old_val": None},
        {"new_val": None, "old_val": {"id": 1, "v": 1}},
    ]
    assert await next_items(point) == [{"new_val": {"id": 1, "v": 0}, "old_val": {"id": 1, "v": 1}}]
    field = await engine.run(r.table(table).changes()["new_val"].build(), GLOBAL)
    await run(engine, r.table(table).insert({"id": 7}))
    assert await next_items(field) == [{"id": 7}]


async def test_feed_overflow_and_abort(engine: Engine, table: str) -> None:
    feed = await engine.run(r.table(table).changes(changefeed_queue_size=3).build(), GLOBAL)
    await run(engine, r.table(table).insert([{"id": i} for i in range(10, 14)]))
    assert await next_items(feed) == [
        {"error": "Changefeed cache over array size limit, skipped 4 elements."}
    ]
    await run(engine, r.table(table).insert({"id": 20}))
    assert await next_items(feed) == [{"new_val": {"id": 20}, "old_val": None}]
    waiting = asyncio.ensure_future(feed.next_batch())
    await asyncio.sleep(0)
    await run(engine, r.table_drop(table))
    with pytest.raises(ReqlOpFailedError, match=r"^Changefeed aborted \(unavailable\).$"):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(ReqlOpFailedError, match=r"does not exist"):
        await engine.run(r.table(table).changes().build(), GLOBAL)


async def test_abort_feeds(engine: Engine, table: str) -> None:
    feed = await engine.run(r.table(table).get(1).changes().build(), GLOBAL)
    engine.abort_feeds()
    with pytest.raises(ReqlOpFailedError, match=r"Changefeed aborted"):
        await next_items(feed)


async def test_table_config_feed(engine: Engine) -> None:
    config = r.db("rethinkdb").table("table_config")
    feed = await engine.run(config.changes().build(), GLOBAL)
    await run(engine, r.table_create("a"))
    await run(engine, r.table("a").index_create("x"))
    await run(engine, r.table_drop("a"))
    added, changed, removed = await next_items(feed)
    assert added["old_val"] is None and added["new_val"]["name"] == "a"
    assert changed["new_val"]["indexes"] == ["x"] and changed["old_val"]["indexes"] == []
    assert removed["new_val"] is None and removed["old_val"]["name"] == "a"
    assert await run(engine, config.filter({"name": "a"}).count()) == 0
    # As on the real server, a bad row is an error counted by the write.
    refused = await run(engine, config.insert({"id": "x"}))
    assert refused["errors"] == 1 and refused["inserted"] == 0


async def test_optarg_functions_and_args(engine: Engine, table: str) -> None:
    t = r.table(table)
    result = await run(
        engine, t.insert({"id": 1}, conflict=lambda _k, old, new: old.merge({"c": 1}))
    )
    assert result == counts(replaced=1)
    assert await run(engine, t.get_all(r.args([1, 2]))["id"]) == [1, 2]
    assert await run(engine, t.order_by(index=r.desc("id")).limit(2)["id"]) == [5, 4]


async def test_feed_transforms_and_global_queue_size(engine: Engine, table: str) -> None:
    query = r.table(table).changes(include_initial=True).filter(r.row["new_val"]["v"] == 1)
    feed = await engine.run(query["new_val"]["id"].build(), GLOBAL)
    assert feed.first_batch() == [1, 4]
    await run(engine, r.table(table).insert([{"id": 10, "v": 1}, {"id": 11, "v": 2}]))
    assert await next_items(feed) == [10]
    small = await engine.run(
        r.table(table).changes().build(), {**GLOBAL, "changefeed_queue_size": 1}
    )
    await run(engine, r.table(table).insert([{"id": 20}, {"id": 21}]))
    assert (await next_items(small))[0]["error"].endswith("skipped 2 elements.")
