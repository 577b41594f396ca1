"""Terms and checks the ReQL test server gained for issue 19 (RethinkDB's polyglot
tests), each as a real RethinkDB answers it."""

from __future__ import annotations

import pytest
from rethinkdb.errors import (
    ReqlCompileError,
    ReqlNonExistenceError,
    ReqlQueryLogicError,
    ReqlResourceLimitError,
)

from ._client import Client, error_message


async def test_array_positions(client: Client) -> None:
    r = client.r
    assert await client.run(r.expr([1, 4]).splice_at(1, [2, 3])) == [1, 2, 3, 4]
    assert await client.run(r.expr([1, 2, 3]).insert_at(-1, 4)) == [1, 2, 3, 4]
    assert await client.run(r.expr([1, 2, 3, 4]).delete_at(4, 4)) == [1, 2, 3, 4]
    assert await client.run(r.expr([1, 2, 3]).offsets_of(lambda x: x > 1)) == [1, 2]
    message = await error_message(ReqlNonExistenceError, client.run(r.expr([1]).delete_at(-5)))
    assert message == "Index out of bounds: -5"
    message = await error_message(ReqlNonExistenceError, client.run(r.expr([1]).splice_at(3, [])))
    assert message == "Index `3` out of bounds for array of size: `1`."


async def test_time_parts(client: Client) -> None:
    r = client.r
    t = r.time(2013, 7, 29, 23, 30, 10.5, "-07:00")
    assert await client.run(t.time_of_day()) == 84610.5
    assert await client.run(t.date().to_iso8601()) == "2013-07-29T00:00:00-07:00"
    assert await client.run(t.during(t, t + 1)) is True
    assert await client.run(t.during(t, t + 1, left_bound="open")) is False
    message = await error_message(ReqlQueryLogicError, client.run(r.time(2013, 7, 29, 1, "Z")))
    assert message == "Got 5 arguments to TIME (expected 4 or 7)."
    message = await error_message(
        ReqlQueryLogicError, client.run(r.epoch_time(-17990000000).year())
    )
    assert message.startswith("Error in time logic: Year is out of valid range: 1400..")


@pytest.fixture
async def joined(client: Client, table: str) -> str:
    r = client.r
    await client.run(r.table(table).insert([{"id": 1, "o": 2}, {"id": 2, "o": 9}, {"id": 3}]))
    return table


async def test_joins(client: Client, joined: str) -> None:
    r = client.r
    tbl = r.table(joined)
    pairs = await client.run(tbl.eq_join("o", tbl).order_by(r.row["left"]["id"]))
    assert pairs == [{"left": {"id": 1, "o": 2}, "right": {"id": 2, "o": 9}}]
    zipped = await client.run(tbl.eq_join("o", tbl).zip())
    assert zipped == [{"id": 2, "o": 9}]
    outer = tbl.order_by("id").outer_join(r.expr([2]), lambda left, right: left["id"] == right)
    assert await client.run(outer.count()) == 3
    message = await error_message(ReqlQueryLogicError, client.run(r.expr([{"a": 1}]).zip()))
    assert message == "ZIP can only be called on the result of a join."
    message = await error_message(ReqlQueryLogicError, client.run(r.expr([1]).zip()))
    assert message == "Expected type OBJECT but found NUMBER."


async def test_info_and_object_building_predicates(client: Client, joined: str) -> None:
    r = client.r
    info = await client.run(r.table(joined).info())
    assert (info["type"], info["name"], info["primary_key"]) == ("TABLE", joined, "id")
    assert info["db"]["type"] == "DB"
    assert await client.run(r.table(joined).between(1, 2).info()["sorting"]) == "UNORDERED"
    # A function building an object is matched as that object.
    assert await client.run(r.table(joined).filter(lambda row: {"o": 2})["id"]) == [1]
    assert await client.run(r.table(joined).count(lambda row: {"o": 9})) == 1


async def test_default_and_empty_error(client: Client) -> None:
    r = client.r
    assert await client.run(r.expr(None).default(r.error())) is None
    missing = r.expr({})["b"].default(r.error())
    message = await error_message(ReqlNonExistenceError, client.run(missing))
    assert message.startswith("No attribute `b` in object:")
    assert await client.run(r.expr([]).reduce(lambda a, b: a + b).default(2)) == 2
    not_object = r.expr("a")["b"].default(2)
    message = await error_message(ReqlQueryLogicError, client.run(not_object))
    assert message == 'Cannot perform bracket on a non-object non-sequence `"a"`.'
    assert await client.run(r.do(1)) == 1


async def test_functions_where_the_real_server_wants_them(client: Client, table: str) -> None:
    r = client.r
    message = await error_message(ReqlQueryLogicError, client.run(r.expr([1, 2]).map(1)))
    assert message.startswith("Expected type FUNCTION but found DATUM:")
    two = r.expr([1]).map(lambda x, y: x)
    message = await error_message(ReqlQueryLogicError, client.run(two))
    assert message == "The function passed to `map` expects 2 arguments, but 1 sequence was found."
    assert await client.run(r.range(2).map(lambda: 0)) == [0, 0]
    nested = r.expr([1, 2]).map(r.table(table).insert({"x": r.row}))
    message = await error_message(ReqlCompileError, client.run(nested))
    assert message == "Cannot nest writes or meta ops in stream operations.  Use FOR_EACH instead."
    message = await error_message(ReqlQueryLogicError, client.run(r.expr([1]).for_each(1)))
    assert message == (
        "FOR_EACH expects one or more basic write queries.  Expected type ARRAY but found NUMBER."
    )


async def test_union_interleave_and_times(client: Client) -> None:
    r = client.r
    odd, even = r.expr([{"n": 1}, {"n": 3}]), r.expr([{"n": 2}, {"n": 4}])
    merged = await client.run(odd.union(even, interleave="n")["n"])
    assert merged == [1, 2, 3, 4]
    backwards = odd.union(even, interleave=r.desc("n"))
    message = await error_message(ReqlQueryLogicError, client.run(backwards))
    assert message == "The streams given as arguments are not ordered by given ordering."
    assert await client.run(r.time(2014, 9, 11, "Z").timezone()) == "+00:00"
    assert await client.run(r.binary(b"abc").count()) == 3
    message = await error_message(ReqlQueryLogicError, client.run(r.minval.coerce_to("string")))
    assert message == "Cannot convert `r.minval` to JSON."


async def test_pseudo_types_and_time_zones_in_queries(client: Client) -> None:
    r = client.r
    written = {"$reql_type$": "TIME", "epoch_time": 1375445163.0872, "timezone": "Z"}
    assert await client.run(r.expr(written).to_epoch_time()) == 1375445163.087
    assert await client.run(r.expr(written).timezone()) == "+00:00"
    message = await error_message(ReqlQueryLogicError, client.run(r.now().in_timezone("-00:00")))
    assert message == "`-00:00` is not a valid time offset."
    message = await error_message(ReqlQueryLogicError, client.run(r.time(2013, 1, 1, "+25:00")))
    assert message == "Hours out of range in `+25:00`."
    broken = r.expr({"$reql_type$": "BINARY", "data": "A^CDEFGH"})
    message = await error_message(ReqlQueryLogicError, client.run(broken))
    assert message == "Invalid base64 character found: '^'."


async def test_slices_contains_and_literals(client: Client) -> None:
    r = client.r
    assert await client.run(r.range(10).slice(2, 5, left_bound="open")) == [3, 4]
    message = await error_message(ReqlQueryLogicError, client.run(r.range(10).slice(-2)))
    assert message == "Cannot use a negative left index on a stream."
    assert await client.run(r.expr([1, 2, 3]).slice(-2)) == [2, 3]
    assert await client.run(r.expr([1, 2, 3]).contains(2, 2)) is False
    assert await client.run(r.and_(r.args([True, True]))) is True
    message = await error_message(
        ReqlQueryLogicError, client.run(r.expr({"a": 1}).merge(r.literal(2)))
    )
    assert message.startswith("Stray literal keyword found")
    rows = r.expr([{"a": 1}, {"b": 2}]).filter(lambda row: row["a"] == 1, default=r.error())
    message = await error_message(ReqlNonExistenceError, client.run(rows))
    assert message == 'No attribute `a` in object:\n{\n\t"b":\t2\n}'


async def test_infinite_range(client: Client) -> None:
    r = client.r
    assert await client.run(r.range().limit(3)) == [0, 1, 2]
    assert await client.run(r.range().type_of()) == "STREAM"
    assert await client.run(r.range().map(r.expr([5, 6]), lambda x, y: x + y)) == [5, 7]
    running = r.range().fold(0, lambda acc, row: acc + 1, emit=lambda old, row, acc: [acc])
    assert await client.run(running.limit(3)) == [1, 2, 3]
    message = await error_message(ReqlQueryLogicError, client.run(r.range().count()))
    assert message.startswith("Cannot use an infinite stream with an aggregation function")


async def test_json_parse_errors(client: Client) -> None:
    r = client.r
    message = await error_message(ReqlQueryLogicError, client.run(r.json("[1,2")))
    assert message.endswith(" as JSON: Missing a comma or ']' after an array element.")
    message = await error_message(ReqlQueryLogicError, client.run(r.json('{"a":1')))
    assert message.endswith(" as JSON: Missing a comma or '}' after an object member.")
    assert await client.run(r.json("[1.0]")) == [1]


async def test_limits_and_object_kinds(client: Client, table: str) -> None:
    r = client.r
    message = await error_message(
        ReqlResourceLimitError, client.run(r.expr([1, 2, 3]), array_limit=2)
    )
    assert message.startswith("Array over size limit `2`.")
    message = await error_message(ReqlQueryLogicError, client.run(r.now()["epoch_time"]))
    assert message == "Cannot call `bracket` on objects of type `PTYPE<TIME>`."
    message = await error_message(ReqlQueryLogicError, client.run(r.expr(1).keys()))
    assert message == "Cannot call `keys` on objects of type `NUMBER`."
    message = await error_message(ReqlQueryLogicError, client.run(r.error()))
    assert message == "Empty ERROR term outside a default block."
    assert await client.run(r.branch(r.args([True, 1]), r.error("a"))) == 1
    message = await error_message(ReqlQueryLogicError, client.run(r.json('{"a":1,"a":2}')))
    assert message == 'Duplicate key "a" in JSON.'
    message = await error_message(ReqlQueryLogicError, client.run(r.db("test").table_create()))
    assert message.startswith("Expected type DATUM but found DATABASE:")


async def test_index_from_index_status(client: Client, table: str) -> None:
    r = client.r
    tbl = r.table(table)
    await client.run(tbl.insert([{"id": 1, "a": 2}, {"id": 2, "a": 3}]))
    await client.run(tbl.index_create("double", lambda row: row["a"] * 2))
    function = tbl.index_status("double").nth(0)["function"]
    assert await client.run(tbl.index_create("again", function)) == {"created": 1}
    await client.run(tbl.index_wait())
    assert await client.run(tbl.get_all(6, index="again")["id"]) == [2]
    counts = tbl.group(lambda row: row["id"] % 2).count({"id": 1}).ungroup()
    assert await client.run(counts) == []  # count(value) counts equal rows: none here
