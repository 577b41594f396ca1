"""Changefeeds that end (``.limit(n)``), top-n feeds, squashing, the checks of
``changes()``'s arguments and errors in a feed's transforms (issue 19)."""

from __future__ import annotations

import asyncio

import pytest
from rethinkdb.errors import ReqlNonExistenceError, ReqlQueryLogicError, ReqlServerCompileError

from ._client import Client, error_message


async def _drain(client: Client, feed_query: object, timeout: float = 5.0) -> list:
    """Run a feed that ends and read it to its end."""
    return await asyncio.wait_for(client.run(feed_query), timeout)


async def test_limit_ends_a_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes().limit(2)["new_val"]["id"])
    await other.run(r.table(table).insert([{"id": 1}, {"id": 2}, {"id": 3}]))
    first_two = await feed.take(2)
    assert len(set(first_two)) == 2 and set(first_two) <= {1, 2, 3}
    with pytest.raises(Exception) as raised:
        await feed.next(timeout=2)
    assert "CursorEmpty" in type(raised.value).__name__ or isinstance(raised.value, StopIteration)
    # limit(0) and a limit the initial values reach end at once.
    assert await _drain(client, r.table(table).changes().limit(0)) == []
    states = r.table(table).get(1).changes(include_states=True, include_initial=True).limit(2)
    assert await _drain(client, states) == [{"state": "initializing"}, {"new_val": {"id": 1}}]
    message = await error_message(
        ReqlQueryLogicError, client.run(r.table(table).changes().limit(-1))
    )
    assert message == "LIMIT takes a non-negative argument (got -1)"


async def test_top_n_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    await other.run(r.table(table).insert([{"id": 1}, {"id": 2}, {"id": 5}]))
    query = r.table(table).order_by(index=r.desc("id")).limit(2)
    feed = await client.feed(query.changes(include_initial=True, include_states=True))
    assert await feed.take(4) == [
        {"state": "initializing"},
        {"new_val": {"id": 5}},
        {"new_val": {"id": 2}},
        {"state": "ready"},
    ]
    await other.run(r.table(table).insert({"id": 3}))  # enters, pushes 2 out
    assert await feed.next() == {"old_val": {"id": 2}, "new_val": {"id": 3}}
    await other.run(r.table(table).insert({"id": 0}))  # below the top 2: nothing
    await other.run(r.table(table).get(3).update({"v": 1}))
    assert await feed.next() == {"old_val": {"id": 3}, "new_val": {"id": 3, "v": 1}}
    await other.run(r.table(table).get(5).delete())  # 2 comes back in
    assert await feed.next() == {"old_val": {"id": 5}, "new_val": {"id": 2}}
    await feed.close()


async def test_squash_merges_the_changes_of_a_key(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes(squash=0.5).limit(1))
    await other.run(r.table(table).insert({"id": 1}))
    await other.run(r.table(table).get(1).update({"a": 1}))
    assert await feed.next() == {"new_val": {"id": 1, "a": 1}, "old_val": None}


@pytest.mark.parametrize(
    ("optargs", "message"),
    [
        ({"squash": None}, "Expected BOOL or NUMBER but found NULL."),
        ({"squash": -10}, "Expected BOOL or a positive NUMBER but found a negative NUMBER."),
        ({"changefeed_queue_size": 0}, "Illegal changefeed queue size `0`.  (Must be >= 1.)"),
    ],
)
async def test_changes_argument_checks(
    client: Client, table: str, optargs: dict, message: str
) -> None:
    query = client.r.table(table).changes(**optargs)
    assert await error_message(ReqlQueryLogicError, client.run(query)) == message


async def test_changes_refuses_unknown_optargs(client: Client, table: str) -> None:
    query = client.r.table(table).changes(foo=1)
    message = await error_message(ReqlServerCompileError, client.run(query))
    assert message == "Unrecognized optional argument `foo`."


async def test_feed_type_and_non_deterministic_functions(client: Client, table: str) -> None:
    r = client.r
    assert await client.run(r.table(table).changes().type_of()) == "STREAM"
    query = r.table(table).filter(lambda row: r.table(table).count() > 1).changes()
    message = await error_message(ReqlQueryLogicError, client.run(query))
    assert message == "Cannot call `changes` after a non-deterministic function."


async def test_an_error_after_changes_ends_the_feed(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    # Before changes(): a document the map fails on is left out; after it, the
    # error ends the feed.
    before = await client.feed(r.table(table).map(lambda row: row["x"]).changes())
    after = await client.feed(r.table(table).changes().map(lambda c: c["new_val"]["x"]))
    await other.run(r.table(table).insert({"id": 2, "x": 2}))
    assert await after.next() == 2
    await other.run(r.table(table).insert({"id": 1}))  # no x: before leaves it out
    await other.run(r.table(table).insert({"id": 3, "x": 3}))
    assert await before.take(2) == [
        {"new_val": 2, "old_val": None},
        {"new_val": 3, "old_val": None},
    ]
    with pytest.raises(ReqlNonExistenceError, match="No attribute `x`"):
        await after.next()
    await before.close()


async def test_debug_scratch_is_a_writable_hidden_table(client: Client) -> None:
    r = client.r
    scratch = r.db("rethinkdb").table("_debug_scratch")
    feed = await client.feed(scratch.get("h19").changes(include_initial=True))
    assert await feed.next() == {"new_val": None}
    assert (await client.run(scratch.insert({"id": "h19"})))["inserted"] == 1
    assert await feed.next() == {"new_val": {"id": "h19"}, "old_val": None}
    assert (await client.run(scratch.get("h19").delete()))["deleted"] == 1
    assert "_debug_scratch" not in await client.run(r.db("rethinkdb").table_list())
    await feed.close()


async def test_top_n_offsets(client: Client, other: Client, table: str) -> None:
    r = client.r
    await other.run(r.table(table).insert([{"id": 1}, {"id": 3}, {"id": 5}]))
    query = r.table(table).order_by(index=r.desc("id")).limit(2)
    feed = await client.feed(query.changes(include_initial=True, include_offsets=True))
    assert await feed.take(2) == [
        {"new_offset": 0, "new_val": {"id": 5}},
        {"new_offset": 1, "new_val": {"id": 3}},
    ]
    await other.run(r.table(table).get(5).delete())
    assert await feed.next() == {
        "old_offset": 0,
        "old_val": {"id": 5},
        "new_offset": 1,
        "new_val": {"id": 1},
    }
    await feed.close()
    message = await error_message(
        ReqlQueryLogicError, client.run(r.table(table).changes(include_offsets=True))
    )
    assert message == "Cannot include offsets for range subs."


async def test_skip_on_a_feed(client: Client, other: Client, table: str) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes().skip(1)["new_val"]["id"])
    await other.run(r.table(table).insert({"id": 1}))
    await other.run(r.table(table).insert({"id": 2}))
    assert await feed.next() == 2
    await feed.close()


async def test_a_half_full_squash_queue_goes_out_early(
    client: Client, other: Client, table: str
) -> None:
    r = client.r
    feed = await client.feed(r.table(table).changes(squash=1000, changefeed_queue_size=10))
    await other.run(r.table(table).insert([{"id": i} for i in range(7)]))
    # Once more than half the queue is waiting, changes go out (the real server
    # may keep the last one back for the squash delay).
    changes = await feed.take(6)
    assert {change["new_val"]["id"] for change in changes} <= set(range(7))
    await feed.close()


@pytest.mark.parametrize(
    ("make_query", "message"),
    [
        (lambda t: t.order_by("id").changes(), "Cannot call `changes` on an eager stream."),
        (
            lambda t: t.limit(2).changes(),
            "Cannot get changes on the first elements of an unordered stream.",
        ),
        (
            lambda t: t.concat_map(lambda row: [row]).changes(),
            "Cannot call `changes` after `concat_map`.",
        ),
    ],
)
async def test_changes_on_what_cannot_be_followed(
    client: Client, table: str, make_query: object, message: str
) -> None:
    query = make_query(client.r.table(table))  # type: ignore[operator]
    assert await error_message(ReqlQueryLogicError, client.run(query)) == message


async def test_changes_flags_are_truthy(client: Client, other: Client, table: str) -> None:
    r = client.r
    await other.run(r.table(table).insert({"id": 1}))
    feed = r.table(table).changes(include_initial="yes", include_states=0).limit(3)
    assert await _drain(client, feed) == [
        {"state": "initializing"},
        {"new_val": {"id": 1}},
        {"state": "ready"},
    ]


async def test_top_n_of_a_bounded_filtered_slice(client: Client, other: Client, table: str) -> None:
    r = client.r
    t = r.table(table)
    await other.run(t.insert([{"id": i, "even": i % 2 == 0} for i in range(1, 9)]))
    query = t.between(2, 8).order_by(index=r.desc("id")).filter({"even": True}).limit(2)
    feed = await client.feed(query.changes(include_initial=True))
    assert await feed.take(2) == [
        {"new_val": {"id": 6, "even": True}},
        {"new_val": {"id": 4, "even": True}},
    ]
    await other.run(t.insert({"id": 9, "even": True}))  # outside between's bounds
    await other.run(t.get(6).delete())
    assert await feed.next() == {
        "new_val": {"id": 2, "even": True},
        "old_val": {"id": 6, "even": True},
    }
    await feed.close()


async def test_union_of_changefeeds(client: Client, other: Client, table: str) -> None:
    r = client.r
    second = table + "_b"
    await client.run(r.table_create(second))
    query = r.table(table).changes().union(r.table(second).changes(), [{"new_val": {"id": 0}}])
    assert await _drain(client, query["new_val"]["id"].limit(1)) == [0]
    feed = await client.feed(query.skip(1)["new_val"]["id"].limit(2))
    await other.run(r.table(table).insert({"id": 1}))
    await other.run(r.table(second).insert({"id": 2}))
    assert await feed.take(2) == [1, 2]
    await client.run(r.table_drop(second))
