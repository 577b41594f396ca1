"""Reads, writes and expressions through the official driver, as a real RethinkDB answers them."""

from __future__ import annotations

import datetime as dt

import pytest
from rethinkdb.errors import ReqlNonExistenceError, ReqlQueryLogicError

from ._client import Client, error_message

PEOPLE = [
    {"id": 1, "name": "ada", "team": "red", "age": 36},
    {"id": 2, "name": "bob", "team": "blue", "age": 25},
    {"id": 3, "name": "cyd", "team": "red", "age": 41},
    {"id": 4, "name": "dee", "team": "green", "age": 25},
]


@pytest.fixture
async def people(client: Client, table: str) -> str:
    """``table`` filled with PEOPLE, with a secondary index on ``team``."""
    r = client.r
    await client.run(r.table(table).insert(PEOPLE))
    await client.run(r.table(table).index_create("team"))
    await client.run(r.table(table).index_wait("team"))
    return table


def _ids(docs: list[dict]) -> list:
    return sorted(doc["id"] for doc in docs)


async def test_get(client: Client, people: str) -> None:
    r = client.r
    assert await client.run(r.table(people).get(2)) == PEOPLE[1]
    assert await client.run(r.table(people).get(99)) is None
    assert await client.run(r.table(people).get(3)["name"]) == "cyd"


async def test_get_all_by_primary_and_secondary_index(client: Client, people: str) -> None:
    r = client.r
    assert _ids(await client.run(r.table(people).get_all(1, 3, 99))) == [1, 3]
    assert _ids(await client.run(r.table(people).get_all("red", index="team"))) == [1, 3]
    both = r.table(people).get_all("red", "green", index="team")
    assert _ids(await client.run(both)) == [1, 3, 4]
    assert await client.run(r.table(people).get_all("purple", index="team")) == []


async def test_filter_with_object_and_function(client: Client, people: str) -> None:
    r = client.r
    assert _ids(await client.run(r.table(people).filter({"team": "red"}))) == [1, 3]
    assert _ids(await client.run(r.table(people).filter({"team": "red", "age": 41}))) == [3]
    older = r.table(people).filter(lambda doc: doc["age"] > 30)
    assert _ids(await client.run(older)) == [1, 3]
    either = r.table(people).filter((r.row["age"] == 25) | (r.row["name"] == "ada"))
    assert _ids(await client.run(either)) == [1, 2, 4]


async def test_insert_generates_keys(client: Client, table: str) -> None:
    r = client.r
    result = await client.run(r.table(table).insert([{"n": 1}, {"n": 2}]))
    assert result["inserted"] == 2
    assert result["errors"] == 0
    keys = result["generated_keys"]
    assert len(keys) == 2 and all(len(key) == 36 for key in keys)
    docs = await client.run(r.table(table).get_all(*keys))
    assert sorted(doc["n"] for doc in docs) == [1, 2]


async def test_insert_conflicts(client: Client, table: str) -> None:
    r = client.r
    await client.run(r.table(table).insert({"id": 1, "a": 1, "b": 1}))
    duplicate = await client.run(r.table(table).insert({"id": 1, "a": 2}))
    assert (duplicate["inserted"], duplicate["errors"]) == (0, 1)
    assert duplicate["first_error"].startswith("Duplicate primary key `id`:")
    updated = await client.run(r.table(table).insert({"id": 1, "a": 2}, conflict="update"))
    assert updated["replaced"] == 1
    assert await client.run(r.table(table).get(1)) == {"id": 1, "a": 2, "b": 1}
    replaced = await client.run(r.table(table).insert({"id": 1, "c": 3}, conflict="replace"))
    assert replaced["replaced"] == 1
    assert await client.run(r.table(table).get(1)) == {"id": 1, "c": 3}
    same = await client.run(r.table(table).insert({"id": 1, "c": 3}, conflict="replace"))
    assert same["unchanged"] == 1


async def test_insert_return_changes(client: Client, table: str) -> None:
    r = client.r
    result = await client.run(r.table(table).insert({"id": "x", "v": 1}, return_changes=True))
    assert result["changes"] == [{"new_val": {"id": "x", "v": 1}, "old_val": None}]
    result = await client.run(
        r.table(table).insert({"id": "x", "v": 2}, conflict="update", return_changes=True)
    )
    assert result["changes"] == [{"new_val": {"id": "x", "v": 2}, "old_val": {"id": "x", "v": 1}}]


async def test_insert_rejects_non_objects(client: Client, table: str) -> None:
    r = client.r
    message = await error_message(ReqlQueryLogicError, client.run(r.table(table).insert("text")))
    assert message == "Cannot convert STRING to SEQUENCE"
    result = await client.run(r.table(table).insert([{"id": 1}, "text"]))
    assert (result["inserted"], result["errors"]) == (1, 1)
    assert result["first_error"] == "Expected type OBJECT but found STRING."


async def test_update_document_table_and_selection(client: Client, people: str) -> None:
    r = client.r
    one = await client.run(r.table(people).get(1).update({"age": 37}))
    assert (one["replaced"], one["unchanged"]) == (1, 0)
    again = await client.run(r.table(people).get(1).update({"age": 37}))
    assert (again["replaced"], again["unchanged"]) == (0, 1)
    missing = await client.run(r.table(people).get(99).update({"age": 1}))
    assert missing["skipped"] == 1
    reds = await client.run(r.table(people).filter({"team": "red"}).update({"flag": True}))
    assert reds["replaced"] == 2
    everyone = await client.run(r.table(people).update({"seen": r.row["age"] + 1}))
    assert everyone["replaced"] == 4
    assert (await client.run(r.table(people).get(2)))["seen"] == 26
    flagged = await client.run(r.table(people).filter({"flag": True}))
    assert _ids(flagged) == [1, 3]
    changed = await client.run(r.table(people).get(4).update({"age": 26}, return_changes=True))
    assert changed["changes"][0]["old_val"]["age"] == 25
    assert changed["changes"][0]["new_val"]["age"] == 26


async def test_replace(client: Client, people: str) -> None:
    r = client.r
    result = await client.run(r.table(people).get(2).replace({"id": 2, "name": "bo"}))
    assert result["replaced"] == 1
    assert await client.run(r.table(people).get(2)) == {"id": 2, "name": "bo"}
    inserted = await client.run(r.table(people).get(9).replace({"id": 9, "name": "new"}))
    assert inserted["inserted"] == 1
    removed = await client.run(r.table(people).get(9).replace(None))
    assert removed["deleted"] == 1
    renamed = await client.run(r.table(people).replace(lambda doc: doc.without("age")))
    assert renamed["replaced"] == 3  # 2 already had no age: unchanged
    assert renamed["unchanged"] == 1


async def test_delete_document_selection_and_table(client: Client, people: str) -> None:
    r = client.r
    assert (await client.run(r.table(people).get(1).delete()))["deleted"] == 1
    assert (await client.run(r.table(people).get(1).delete()))["skipped"] == 1
    removed = await client.run(r.table(people).filter({"age": 25}).delete())
    assert removed["deleted"] == 2
    assert await client.run(r.table(people).count()) == 1
    assert (await client.run(r.table(people).delete()))["deleted"] == 1
    assert await client.run(r.table(people).count()) == 0


async def test_count_limit_order_by(client: Client, people: str) -> None:
    r = client.r
    assert await client.run(r.table(people).count()) == 4
    assert await client.run(r.table(people).filter({"team": "red"}).count()) == 2
    by_age = await client.run(r.table(people).order_by("age", "id"))
    assert [doc["id"] for doc in by_age] == [2, 4, 1, 3]
    oldest = await client.run(r.table(people).order_by(r.desc("age")).limit(2))
    assert [doc["id"] for doc in oldest] == [3, 1]
    by_index = await client.run(r.table(people).order_by(index=r.desc("id")))
    assert [doc["id"] for doc in by_index] == [4, 3, 2, 1]
    assert len(await client.run(r.table(people).limit(3))) == 3


async def test_pluck_without_merge(client: Client, people: str) -> None:
    r = client.r
    assert await client.run(r.table(people).get(1).pluck("name", "age")) == {
        "name": "ada",
        "age": 36,
    }
    names = await client.run(r.table(people).order_by("id").pluck("name"))
    assert names == [{"name": "ada"}, {"name": "bob"}, {"name": "cyd"}, {"name": "dee"}]
    assert await client.run(r.table(people).get(2).without("age", "team")) == {
        "id": 2,
        "name": "bob",
    }
    merged = await client.run(r.table(people).get(2).merge({"age": 26, "extra": [1]}))
    assert merged == {"id": 2, "name": "bob", "team": "blue", "age": 26, "extra": [1]}
    computed = await client.run(r.table(people).get(2).merge(lambda doc: {"next": doc["age"] + 1}))
    assert computed["next"] == 26


async def test_default_and_branch(client: Client, people: str) -> None:
    r = client.r
    assert await client.run(r.expr({"a": 1})["b"].default(5)) == 5
    assert await client.run(r.table(people).get(99)["name"].default("nobody")) == "nobody"
    message = await error_message(ReqlNonExistenceError, client.run(r.expr({"a": 1})["b"]))
    assert message.startswith("No attribute `b` in object:")
    assert await client.run(r.branch(r.expr(3) > 2, "yes", "no")) == "yes"
    assert await client.run(r.branch(False, "yes", None, "maybe", "no")) == "no"
    teams = r.table(people).order_by("id").map(r.branch(r.row["age"] > 30, "old", "young"))
    assert await client.run(teams) == ["old", "young", "old", "young"]


async def test_times(client: Client, table: str) -> None:
    r = client.r
    now = await client.run(r.now())
    assert isinstance(now, dt.datetime) and now.tzinfo is not None
    assert abs(now - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    epoch = await client.run(r.epoch_time(86400))
    assert epoch == dt.datetime(1970, 1, 2, tzinfo=dt.timezone.utc)
    parsed = await client.run(r.iso8601("2021-03-04T05:06:07.250+02:00"))
    assert parsed.utcoffset() == dt.timedelta(hours=2)
    assert parsed == dt.datetime(2021, 3, 4, 3, 6, 7, 250000, tzinfo=dt.timezone.utc)
    assert await client.run(r.epoch_time(86400).to_epoch_time()) == 86400


async def test_time_and_binary_round_trip(client: Client, table: str) -> None:
    r = client.r
    moment = dt.datetime(2020, 5, 17, 8, 30, 15, 123000, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
    blob = bytes(range(256))
    await client.run(
        r.table(table).insert({"id": 1, "at": moment, "blob": blob, "b2": r.binary(b"")})
    )
    doc = await client.run(r.table(table).get(1))
    assert doc["at"] == moment
    assert doc["at"].utcoffset() == dt.timedelta(hours=-4)
    assert doc["blob"] == blob
    assert doc["b2"] == b""
    raw = await client.run(r.table(table).get(1), time_format="raw", binary_format="raw")
    assert raw["at"]["$reql_type$"] == "TIME"
    assert raw["blob"]["$reql_type$"] == "BINARY"


async def test_long_sequences_need_continue(client: Client, table: str) -> None:
    r = client.r
    result = await client.run(
        r.table(table).insert([{"id": i, "pad": "x" * 200} for i in range(2500)])
    )
    assert result["inserted"] == 2500
    rows = await client.run(r.table(table))
    assert sorted(row["id"] for row in rows) == list(range(2500))
    cursor = await client.raw(r.table(table))
    assert cursor.error is None, "2500 rows should come in several batches"
    if client.kind == "sync":
        cursor.close()
    else:
        await cursor.close()
    ordered = await client.run(r.table(table).order_by(index="id").pluck("id"))
    assert [row["id"] for row in ordered] == list(range(2500))
