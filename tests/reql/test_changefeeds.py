"""Changefeeds through the official driver: table, point and filter feeds and their options."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from rethinkdb.errors import ReqlCursorEmpty, ReqlOpFailedError

from ._client import Client, Feed, error_message
from .conftest import reql_test_server_only


async def _next_matching(feed: Feed, predicate: Callable[[Any], bool], limit: int = 50) -> Any:
    """The first item satisfying ``predicate`` (other tests' changes may come first)."""
    for _ in range(limit):
        item = await feed.next()
        if predicate(item):
            return item
    raise AssertionError("no matching change")


async def test_table_feed_insert_update_delete(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes())
    await other.run(r.table(table).insert({"id": 1, "v": "a"}))
    assert await feed.next() == {"new_val": {"id": 1, "v": "a"}, "old_val": None}
    await other.run(r.table(table).get(1).update({"v": "b"}))
    assert await feed.next() == {"new_val": {"id": 1, "v": "b"}, "old_val": {"id": 1, "v": "a"}}
    await other.run(r.table(table).get(1).delete())
    assert await feed.next() == {"new_val": None, "old_val": {"id": 1, "v": "b"}}
    await feed.close()


async def test_writes_on_the_feed_connection(client: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes())
    await client.run(r.table(table).insert([{"id": 1}, {"id": 2}]))
    changes = await feed.take(2)
    assert sorted(change["new_val"]["id"] for change in changes) == [1, 2]
    await feed.close()


async def test_two_feeds_on_one_connection(client: Client, other: Client, table: str) -> None:
    r = client.r
    all_changes = await client.feed(r.table(table).changes())
    point = await client.feed(r.table(table).get(2).changes())
    await other.run(r.table(table).insert([{"id": 1}, {"id": 2}]))
    assert (await point.next())["new_val"] == {"id": 2}
    ids = sorted(change["new_val"]["id"] for change in await all_changes.take(2))
    assert ids == [1, 2]
    await point.close()
    await all_changes.close()


async def test_point_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    await other.run(r.table(table).insert([{"id": 1, "n": 0}, {"id": 2, "n": 0}]))
    feed = await client.feed(r.table(table).get(1).changes(include_initial=True))
    assert await feed.next() == {"new_val": {"id": 1, "n": 0}}
    await other.run(r.table(table).get(2).update({"n": 1}))
    await other.run(r.table(table).get(1).update({"n": 2}))
    assert await feed.next() == {"new_val": {"id": 1, "n": 2}, "old_val": {"id": 1, "n": 0}}
    await other.run(r.table(table).get(1).delete())
    assert await feed.next() == {"new_val": None, "old_val": {"id": 1, "n": 2}}
    await feed.close()


async def test_filter_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).filter({"kind": "a"}).changes())
    await other.run(r.table(table).insert({"id": 1, "kind": "b"}))
    await other.run(r.table(table).insert({"id": 2, "kind": "a"}))
    assert await feed.next() == {"new_val": {"id": 2, "kind": "a"}, "old_val": None}
    await other.run(r.table(table).get(2).update({"kind": "b"}))
    assert await feed.next() == {"new_val": None, "old_val": {"id": 2, "kind": "a"}}
    await feed.close()


async def test_function_filter_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).filter(lambda doc: doc["n"] > 10).changes())
    await other.run(r.table(table).insert([{"id": 1, "n": 5}, {"id": 2, "n": 50}]))
    assert (await feed.next())["new_val"] == {"id": 2, "n": 50}
    await feed.close()


async def test_include_initial(client: Client, other: Client, table: str) -> None:
    r = client.r
    docs = [{"id": i} for i in range(3)]
    await other.run(r.table(table).insert(docs))
    feed = await client.feed(r.table(table).changes(include_initial=True))
    initial = await feed.take(3)
    assert all(set(item) == {"new_val"} for item in initial)
    assert sorted(item["new_val"]["id"] for item in initial) == [0, 1, 2]
    await other.run(r.table(table).insert({"id": 3}))
    assert await feed.next() == {"new_val": {"id": 3}, "old_val": None}
    await feed.close()


async def test_include_states(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes(include_states=True))
    assert await feed.next() == {"state": "ready"}
    await other.run(r.table(table).insert({"id": 1}))
    assert await feed.next() == {"new_val": {"id": 1}, "old_val": None}
    await feed.close()


async def test_include_initial_states_and_types(client: Client, other: Client, table: str) -> None:
    r = client.r
    await other.run(r.table(table).insert([{"id": 1}, {"id": 2}]))
    feed = await client.feed(
        r.table(table).changes(include_initial=True, include_states=True, include_types=True)
    )
    assert await feed.next() == {"state": "initializing", "type": "state"}
    initial = await feed.take(2)
    assert sorted(item["new_val"]["id"] for item in initial) == [1, 2]
    assert all(item["type"] == "initial" and "old_val" not in item for item in initial)
    assert await feed.next() == {"state": "ready", "type": "state"}
    await other.run(r.table(table).insert({"id": 3}))
    assert await feed.next() == {"new_val": {"id": 3}, "old_val": None, "type": "add"}
    await other.run(r.table(table).get(3).update({"x": 1}))
    assert await feed.next() == {
        "new_val": {"id": 3, "x": 1},
        "old_val": {"id": 3},
        "type": "change",
    }
    await other.run(r.table(table).get(3).delete())
    assert await feed.next() == {"new_val": None, "old_val": {"id": 3, "x": 1}, "type": "remove"}
    await feed.close()


@pytest.mark.parametrize("squash", [True, 0.05])
async def test_squash_is_accepted(client: Client, other: Client, table: str, squash: Any) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes(squash=squash))
    await other.run(r.table(table).insert({"id": 1}))
    assert await feed.next() == {"new_val": {"id": 1}, "old_val": None}
    await feed.close()


@reql_test_server_only
async def test_queue_overflow_sends_an_error_document(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes(changefeed_queue_size=2))
    for i in range(10):
        await other.run(r.table(table).insert({"id": i}))
    items = [await feed.next()]
    while not any("error" in item for item in items):
        items.append(await feed.next())
    error = next(item["error"] for item in items if "error" in item)
    assert error.startswith("Changefeed cache over array size limit, skipped ")
    assert error.endswith(" elements.")
    await feed.close()


async def test_dropping_the_table_aborts_the_feed(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes())
    point = await client.feed(r.table(table).get(1).changes())
    await other.run(r.table_drop(table))
    for aborted in (feed, point):
        message = await error_message(ReqlOpFailedError, aborted.next())
        assert message.startswith("Changefeed aborted (unavailable)")
    assert await client.run(r.expr("alive")) == "alive"


async def test_table_config_feed_sees_tables_come_and_go(
    client: Client, other: Client, dbname: str
) -> None:
    r = client.r
    feed = await client.feed(r.db("rethinkdb").table("table_config").changes())
    await other.run(r.table_create("appearing"))

    def is_ours(change: Any, side: str) -> bool:
        value = change.get(side) or {}
        return value.get("db") == dbname and value.get("name") == "appearing"

    created = await _next_matching(feed, lambda change: is_ours(change, "new_val"))
    assert created["new_val"]["primary_key"] == "id"
    await other.run(r.table_drop("appearing"))
    dropped = await _next_matching(
        feed, lambda change: is_ours(change, "old_val") and change["new_val"] is None
    )
    assert dropped["old_val"]["id"] == created["new_val"]["id"]
    await feed.close()


async def test_closing_a_feed_while_another_query_runs(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes())
    await other.run(r.table(table).insert({"id": "first"}))
    assert (await feed.next())["new_val"] == {"id": "first"}  # a CONTINUE is now pending
    writes = [{"id": i} for i in range(300)]
    if client.kind == "asyncio":
        running = asyncio.ensure_future(client.run(r.table(table).insert(writes)))
        await feed.close()
        result = await asyncio.wait_for(running, 10)
    else:
        await feed.close()
        result = await client.run(r.table(table).insert(writes))
    assert result["inserted"] == 300
    with pytest.raises(ReqlCursorEmpty):
        await feed.next()
    for _ in range(3):  # the STOP's answers must not confuse later queries
        assert await client.run(r.table(table).count()) == 301
    again = await client.feed(r.table(table).changes())
    await other.run(r.table(table).insert({"id": "last"}))
    assert (await again.next())["new_val"] == {"id": "last"}
    await again.close()
