"""Table slices (between, indexed order_by), get_all keys and value kinds, as a real
RethinkDB answers them (issue 19: RethinkDB's own polyglot tests)."""

from __future__ import annotations

import pytest
from rethinkdb.errors import (
    ReqlCompileError,
    ReqlNonExistenceError,
    ReqlOpFailedError,
    ReqlQueryLogicError,
    ReqlResourceLimitError,
)

from ._client import Client, error_message

DOCS = [
    {"id": 0, "m": [1, 2, 3], "g": 1, "s": "c"},
    {"id": 1, "m": [3], "g": 0, "s": "b"},
    {"id": 2, "m": 7, "g": 1, "s": "a"},
    {"id": 3, "m": [], "g": 0, "s": "a"},
]


@pytest.fixture
async def docs(client: Client, table: str) -> str:
    r = client.r
    await client.run(r.table(table).insert(DOCS))
    await client.run(r.table(table).index_create("m", multi=True))
    await client.run(r.table(table).index_create("g"))
    await client.run(r.table(table).index_wait())
    return table


async def test_between_is_a_table_slice(client: Client, docs: str) -> None:
    r = client.r
    tbl = r.table(docs)
    assert await client.run(tbl.between(1, 3).type_of()) == "TABLE_SLICE"
    assert await client.run(tbl.order_by(index="id").type_of()) == "TABLE_SLICE"
    assert sorted(await client.run(tbl.between(1, 3)["id"])) == [1, 2]
    ordered = tbl.order_by(index=r.desc("id")).between(r.minval, 2)["id"]
    assert await client.run(ordered) == [1, 0]
    assert await client.run(tbl.between(1, 3).order_by(index="id")["id"]) == [1, 2]
    message = await error_message(ReqlQueryLogicError, client.run(tbl.between(0, 1).between(0, 1)))
    assert message == "Cannot perform multiple BETWEENs on the same table."
    message = await error_message(ReqlQueryLogicError, client.run(r.expr([1]).between(0, 1)))
    assert message.startswith("Expected type TABLE_SLICE but found DATUM:")


async def test_between_refuses_null_bounds(client: Client, docs: str) -> None:
    r = client.r
    message = await error_message(ReqlQueryLogicError, client.run(r.table(docs).between(None, 2)))
    assert message.startswith("Cannot use `null` in BETWEEN")


async def test_between_on_a_multi_index_gives_a_row_per_value(client: Client, docs: str) -> None:
    r = client.r
    query = r.table(docs).between(1, 3, index="m", right_bound="closed")["id"]
    assert sorted(await client.run(query)) == [0, 0, 0, 1]


async def test_indexed_order_by_with_more_keys(client: Client, docs: str) -> None:
    r = client.r
    query = r.table(docs).order_by("s", index="g")["id"]
    # The index orders; "s" orders the rows of one index value.
    assert await client.run(query) == [3, 1, 2, 0]
    after_filter = r.table(docs).filter({"g": 1}).order_by(index="g")
    message = await error_message(ReqlQueryLogicError, client.run(after_filter))
    assert message.endswith(
        "Make sure order_by comes before any transformations (such as map) or filters."
    )


async def test_get_all_keys(client: Client, docs: str) -> None:
    r = client.r
    assert await client.run(r.table(docs).get_all([-1])) == []
    assert await client.run(r.table(docs).get_all(r.minval, index="g")) == []
    message = await error_message(ReqlNonExistenceError, client.run(r.table(docs).get_all(None)))
    assert message == "Keys cannot be NULL."
    assert await client.run(r.table(docs).get(2).count()) == 4


async def test_values_where_a_datum_is_wanted(client: Client, docs: str) -> None:
    r = client.r
    result = await client.run(r.expr(1.0))
    assert result == 1 and isinstance(result, int)
    message = await error_message(ReqlQueryLogicError, client.run(r.expr(5) + r.table(docs)))
    assert message.startswith("Expected type DATUM but found TABLE:")
    message = await error_message(ReqlQueryLogicError, client.run(r.object("a", 1, "a", 2)))
    assert message == 'Duplicate key "a" in object.  (got 1 and 2 as values)'
    message = await error_message(ReqlQueryLogicError, client.run(r.minval.to_json_string()))
    assert message == "Cannot convert `r.minval` to JSON."
    assert await client.run(r.expr("0x10").coerce_to("NUMBER")) == 16
    message = await error_message(ReqlNonExistenceError, client.run(r.expr([1]).insert_at(None, 1)))
    assert message == "Expected type NUMBER but found NULL."


async def test_nested_implicit_variable_is_refused(client: Client) -> None:
    r = client.r
    query = r.expr([[1, 5]]).filter(r.row.filter(r.row > 4).count() > 0)
    message = await error_message(ReqlCompileError, client.run(query))
    assert message == "Cannot use r.row in nested queries.  Use functions instead."


async def test_index_rename_errors(client: Client, docs: str) -> None:
    r = client.r
    tbl = r.table(docs)
    message = await error_message(ReqlOpFailedError, client.run(tbl.index_rename("g", "m")))
    assert message.startswith("Index `g` does not exist or index `m` already exists on table `")
    message = await error_message(ReqlQueryLogicError, client.run(tbl.index_rename("g", "id")))
    assert message == "Index name conflict: `id` is the name of the primary key."


async def test_values_that_are_not_secondary_keys(client: Client, table: str) -> None:
    r = client.r
    tbl = r.table(table)
    await client.run(
        tbl.insert([{"id": 1, "a": None}, {"id": 2, "a": {"x": 1}}, {"id": 3, "a": 5}])
    )
    await client.run(tbl.index_create("a"))
    await client.run(tbl.index_wait())
    assert await client.run(tbl.between(r.minval, r.maxval, index="a")["id"]) == [3]
    message = await error_message(
        ReqlResourceLimitError, client.run(tbl.group("id").coerce_to("array"), array_limit=2)
    )
    assert message.startswith("Grouped data over size limit `2`.")
    # A reduction is not held back by the rows, but three groups are an array of three.
    assert await client.run(tbl.group("id").count(), array_limit=3) == {1: 1, 2: 1, 3: 1}
    message = await error_message(
        ReqlResourceLimitError, client.run(tbl.group("id").count(), array_limit=2)
    )
    assert message.startswith("Array over size limit `2`.")
