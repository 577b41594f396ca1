"""Write semantics the real server has (issue 19): errors about one document are
counted, option checks, determinism of atomic writes, primary key limits and
write hooks."""

from __future__ import annotations

import pytest
from rethinkdb.errors import ReqlQueryLogicError, ReqlServerCompileError

from ._client import Client, error_message

COUNTS = {"deleted": 0, "errors": 0, "inserted": 0, "replaced": 0, "skipped": 0, "unchanged": 0}


async def test_errors_inside_a_write_are_counted(client: Client, table: str) -> None:
    r = client.r
    t = r.table(table)
    await client.run(t.insert({"id": 1}))
    result = await client.run(t.get(1).update({"x": r.error("a")}, return_changes=True))
    assert result == {**COUNTS, "errors": 1, "first_error": "a", "changes": []}
    assert await client.run(t.get(1).update(lambda row: None)) == {**COUNTS, "unchanged": 1}
    assert await client.run(t.get(2).update({"x": 1})) == {**COUNTS, "skipped": 1}
    result = await client.run(t.insert([{"id": 1}, {"id": "a" * 200}, {"id": 3}]))
    assert result["errors"] == 2 and result["inserted"] == 1
    assert result["first_error"].startswith("Primary key too long (max 127 characters): ")
    result = await client.run(t.insert({"v": r.minval}))
    assert result["first_error"] == "`r.minval` and `r.maxval` cannot be written to disk."


@pytest.mark.parametrize(
    ("make_query", "message"),
    [
        (
            lambda t: t.insert({"id": 9}, durability="wrong"),
            'Durability option `wrong` unrecognized (options are "hard" and "soft").',
        ),
        (
            lambda t: t.insert({"id": 9}, return_vals=True),
            "Error: encountered obsolete optarg `return_vals`.  Use `return_changes` instead.",
        ),
        (
            lambda t: t.insert({"id": 9}, conflict=lambda a, b: a),
            "The conflict function passed to `insert` should expect 3 arguments.",
        ),
        (
            lambda t: t.get(1).update({"d": t.nth(0)}),
            "Could not prove argument deterministic.  Maybe you want to use the non_atomic flag?",
        ),
    ],
)
async def test_write_option_checks(client: Client, table: str, make_query, message: str) -> None:
    t = client.r.table(table)
    assert await error_message(ReqlQueryLogicError, client.run(make_query(t))) == message
    assert await client.run(t.count()) == 0  # nothing was written


async def test_unknown_write_optarg(client: Client, table: str) -> None:
    query = client.r.table(table).get(1).replace({}, foo="bar")
    message = await error_message(ReqlServerCompileError, client.run(query))
    assert message == "Unrecognized optional argument `foo`."


async def test_non_atomic_update_may_read_tables(client: Client, table: str) -> None:
    t = client.r.table(table)
    await client.run(t.insert({"id": 1}))
    result = await client.run(t.get(1).update({"n": t.count()}, non_atomic=True))
    assert result == {**COUNTS, "replaced": 1}


async def test_write_hooks(client: Client, table: str) -> None:
    r = client.r
    t = r.table(table)
    created = await client.run(t.set_write_hook(lambda ctx, old, new: new.merge({"n": 1})))
    assert created == {"created": 1}
    await client.run(t.insert({"id": 1}))
    assert await client.run(t.get(1)) == {"id": 1, "n": 1}
    assert (await client.run(t.get_write_hook()))["query"].startswith("setWriteHook(")
    await client.run(t.insert({"id": 2}, ignore_write_hook=True))
    assert await client.run(t.get(2)) == {"id": 2}
    replaced = await client.run(t.set_write_hook(lambda ctx, old, new: r.error("no")))
    assert replaced == {"replaced": 1}
    assert (await client.run(t.insert({"id": 3})))["first_error"] == "Error in write hook: no"
    await client.run(t.set_write_hook(lambda ctx, old, new: None))
    result = await client.run(t.get(1).update({"x": 1}))
    assert result["first_error"] == (
        "A write hook function must not turn a replace/insert into a deletion."
    )
    assert await client.run(t.set_write_hook(None)) == {"deleted": 1}
    message = await error_message(ReqlQueryLogicError, client.run(t.set_write_hook(lambda c: 1)))
    assert message == "Write hook functions must expect 3 arguments."


async def test_null_bytes_in_primary_keys(client: Client, table: str) -> None:
    t = client.r.table(table)
    result = await client.run(t.insert([{"id": "ab\x00c"}, {"id": ["x", ["y\x00"]]}]))
    assert result["errors"] == 2 and result["inserted"] == 0
    assert result["first_error"] == (
        'String "ab\\x00c" (truncated) contains NULL byte at offset 2 in index key.'
    )


async def test_config_update_changes_durability(client: Client, table: str) -> None:
    r = client.r
    result = await client.run(r.table(table).config().update({"durability": "soft"}))
    assert result["replaced"] == 1 and result["errors"] == 0
    assert (await client.run(r.table(table).config()))["durability"] == "soft"
    assert await client.run(r.table(table).config().type_of()) == "SELECTION<OBJECT>"


async def test_writes_to_read_only_system_tables_are_counted_errors(client: Client) -> None:
    stats = client.r.db("rethinkdb").table("stats")
    result = await client.run(stats.insert([{"id": 1}, {"id": 2}]))
    assert result["errors"] == 2 and result["inserted"] == 0
    assert result["first_error"] == "It's illegal to write to the `rethinkdb.stats` table."


async def test_config_update_renames_and_checks(client: Client, table: str) -> None:
    r = client.r
    result = await client.run(r.table(table).config().update({"write_acks": "x"}))
    assert result["first_error"] == (
        "The change you're trying to make to `rethinkdb.table_config` has the wrong format. "
        'In `write_acks`: Expected "single" or "majority", got: "x"'
    )
    new_name = table + "_renamed"
    assert (await client.run(r.table(table).config().update({"name": new_name})))["replaced"] == 1
    assert new_name in await client.run(r.table_list())
    await client.run(r.table_drop(new_name))


async def test_arrays_over_the_disk_limit_are_refused(client: Client, table: str) -> None:
    r = client.r
    query = r.table(table).insert({"id": 0, "a": r.range(100_001).coerce_to("array")})
    result = await client.run(query, array_limit=100_001)
    assert result["first_error"] == "Array too large for disk writes (limit 100,000 elements)."
    assert await client.run(r.table(table).count()) == 0


async def test_databases_and_tables_through_the_config_tables(client: Client) -> None:
    r = client.r
    db_config = r.db("rethinkdb").table("db_config")
    name = "h19_" + str(abs(hash(client.kind)) % 1000)
    assert (await client.run(db_config.insert({"name": name})))["inserted"] == 1
    assert name in await client.run(r.db_list())
    deleted = await client.run(db_config.filter({"name": name}).delete())
    assert deleted["deleted"] == 1
    assert name not in await client.run(r.db_list())


async def test_return_changes_is_truncated_at_the_array_limit(client: Client, table: str) -> None:
    t = client.r.table(table)
    await client.run(t.insert([{"id": i} for i in range(10)]))
    result = await client.run(t.update({"x": 1}, return_changes=True), array_limit=4)
    assert len(result["changes"]) == 4 and result["replaced"] == 10
    assert result["warnings"] == ["Too many changes, array truncated to 4."]


async def test_literal_and_array_key_errors(client: Client, table: str) -> None:
    r = client.r
    t = r.table(table)
    await client.run(t.insert({"id": 1}))
    result = await client.run(t.get(1).update(r.literal({"b": 1})))
    assert result["first_error"].startswith("Stray literal keyword found: literal is only legal")
    result = await client.run(t.insert({"id": [1, {"a": 1}]}))
    assert result["first_error"] == (
        "Array keys can only contain numbers, strings, bools,  pseudotypes, or arrays "
        '(got {\n\t"a":\t1\n} of type OBJECT).'
    )
