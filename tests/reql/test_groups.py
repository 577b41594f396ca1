"""group/ungroup, for_each, fold and the bit operations, as a real RethinkDB answers
them (issue 19)."""

from __future__ import annotations

import pytest
from rethinkdb.errors import ReqlQueryLogicError

from ._client import Client, error_message


@pytest.fixture
async def rows(client: Client, table: str) -> str:
    r = client.r
    result = await client.run(
        r.range(6).for_each(lambda i: r.table(table).insert({"id": i, "a": i % 2, "b": i}))
    )
    assert result["inserted"] == 6
    return table


async def test_group_reductions(client: Client, rows: str) -> None:
    r = client.r
    tbl = r.table(rows)
    assert await client.run(tbl.group("a").count()) == {0: 3, 1: 3}
    assert await client.run(tbl.group("a").sum("b")) == {0: 6, 1: 9}
    assert await client.run(tbl.group("a").map(r.row["b"]).max()) == {0: 4, 1: 5}
    assert await client.run(tbl.group("a").type_of()) == "GROUPED_STREAM"
    assert await client.run(tbl.group("a").count().type_of()) == "GROUPED_DATA"
    ungrouped = await client.run(tbl.group("a").count().ungroup())
    assert ungrouped == [{"group": 0, "reduction": 3}, {"group": 1, "reduction": 3}]
    multi = await client.run(r.expr([{"t": [1, 2]}, {"t": [2]}]).group("t", multi=True).count())
    assert multi == {1: 1, 2: 2}
    # A group whose rows lack the summed field is left out.
    assert await client.run(
        tbl.filter({"a": 1}).without("b").union(tbl.filter({"a": 0})).group("a").sum("b")
    ) == {0: 6}
    message = await error_message(ReqlQueryLogicError, client.run(tbl.group()))
    assert message == "Cannot group by nothing."


async def test_table_min_max_read_the_index(client: Client, rows: str) -> None:
    r = client.r
    assert await client.run(r.table(rows).min()) == {"id": 0, "a": 0, "b": 0}
    assert await client.run(r.table(rows).max(index="id")["id"]) == 5


async def test_fold_and_bits(client: Client) -> None:
    r = client.r
    assert await client.run(r.range(4).fold(0, lambda acc, row: acc + row)) == 6
    running = r.range(4).fold(0, lambda acc, row: acc + row, emit=lambda old, row, acc: [acc])
    assert await client.run(running) == [0, 1, 3, 6]
    assert await client.run(r.expr(6).bit_and(3)) == 2
    assert await client.run(r.expr(1).bit_sal(3)) == 8
    assert await client.run(r.expr(-8).bit_sar(1)) == -4
    message = await error_message(ReqlQueryLogicError, client.run(r.expr(2**53).bit_and(1)))
    assert message == "Integer too large: 9007199254740992"
