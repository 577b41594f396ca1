"""Database, table and index administration, with the real server's results and error texts."""

from __future__ import annotations

import uuid

from rethinkdb.errors import ReqlOpFailedError, ReqlQueryLogicError

from ._client import Client, error_message


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_db_create_list_drop(client: Client) -> None:
    r = client.r
    name = _name("db")
    created = await client.run(r.db_create(name))
    assert created["dbs_created"] == 1
    assert created["config_changes"][0]["new_val"]["name"] == name
    assert created["config_changes"][0]["old_val"] is None
    assert name in await client.run(r.db_list())
    dropped = await client.run(r.db_drop(name))
    assert dropped["dbs_dropped"] == 1
    assert dropped["tables_dropped"] == 0
    assert name not in await client.run(r.db_list())


async def test_db_errors(client: Client) -> None:
    r = client.r
    name = _name("db")
    await client.run(r.db_create(name))
    try:
        message = await error_message(ReqlOpFailedError, client.run(r.db_create(name)))
        assert message == f"Database `{name}` already exists."
    finally:
        await client.run(r.db_drop(name))
    message = await error_message(ReqlOpFailedError, client.run(r.db_drop(name)))
    assert message == f"Database `{name}` does not exist."
    message = await error_message(ReqlOpFailedError, client.run(r.db(name).table_list()))
    assert message == f"Database `{name}` does not exist."
    message = await error_message(ReqlQueryLogicError, client.run(r.db_create("bad name")))
    assert message == "Database name `bad name` invalid (Use A-Z, a-z, 0-9, _ and - only)."


async def test_table_create_list_drop(client: Client, dbname: str) -> None:
    r = client.r
    created = await client.run(r.table_create("things"))
    assert created["tables_created"] == 1
    new_val = created["config_changes"][0]["new_val"]
    assert (new_val["name"], new_val["db"], new_val["primary_key"]) == ("things", dbname, "id")
    await client.run(r.db(dbname).table_create("with-dash_and_1"))
    assert sorted(await client.run(r.table_list())) == ["things", "with-dash_and_1"]
    dropped = await client.run(r.table_drop("things"))
    assert dropped["tables_dropped"] == 1
    assert dropped["config_changes"][0]["old_val"]["name"] == "things"
    assert dropped["config_changes"][0]["new_val"] is None
    assert await client.run(r.table_list()) == ["with-dash_and_1"]


async def test_table_errors(client: Client, dbname: str) -> None:
    r = client.r
    await client.run(r.table_create("t"))
    message = await error_message(ReqlOpFailedError, client.run(r.table_create("t")))
    assert message == f"Table `{dbname}.t` already exists."
    message = await error_message(ReqlOpFailedError, client.run(r.table("nope")))
    assert message == f"Table `{dbname}.nope` does not exist."
    message = await error_message(ReqlOpFailedError, client.run(r.table_drop("nope")))
    assert message == f"Table `{dbname}.nope` does not exist."
    message = await error_message(ReqlQueryLogicError, client.run(r.table_create("bad name")))
    assert message == "Table name `bad name` invalid (Use A-Z, a-z, 0-9, _ and - only)."
    message = await error_message(ReqlOpFailedError, client.run(r.db("no_such_db_x").table("t")))
    assert message == "Database `no_such_db_x` does not exist."


async def test_table_with_custom_primary_key(client: Client) -> None:
    r = client.r
    await client.run(r.table_create("users", primary_key="email"))
    config = await client.run(r.table("users").config())
    assert config["primary_key"] == "email"
    assert config["name"] == "users"
    await client.run(r.table("users").insert({"email": "a@example.com", "name": "A"}))
    assert (await client.run(r.table("users").get("a@example.com")))["name"] == "A"
    result = await client.run(r.table("users").insert({"name": "no key"}))
    assert len(result["generated_keys"]) == 1


async def test_index_lifecycle(client: Client, dbname: str) -> None:
    r = client.r
    await client.run(r.table_create("docs"))
    assert await client.run(r.table("docs").index_create("kind")) == {"created": 1}
    await client.run(r.table("docs").index_create("score_x2", lambda doc: doc["score"] * 2))
    await client.run(r.table("docs").index_create("tags", multi=True))
    assert sorted(await client.run(r.table("docs").index_list())) == ["kind", "score_x2", "tags"]
    waited = await client.run(r.table("docs").index_wait())
    assert sorted(entry["index"] for entry in waited) == ["kind", "score_x2", "tags"]
    assert all(entry["ready"] for entry in waited)
    status = await client.run(r.table("docs").index_status("kind"))
    assert status[0]["index"] == "kind"
    assert status[0]["ready"] is True
    assert status[0]["multi"] is False

    message = await error_message(
        ReqlOpFailedError, client.run(r.table("docs").index_create("kind"))
    )
    assert message == f"Index `kind` already exists on table `{dbname}.docs`."
    message = await error_message(ReqlOpFailedError, client.run(r.table("docs").index_drop("nope")))
    assert message == f"Index `nope` does not exist on table `{dbname}.docs`."
    missing = r.table("docs").get_all(1, index="nope")
    message = await error_message(ReqlOpFailedError, client.run(missing))
    assert message == f"Index `nope` was not found on table `{dbname}.docs`."

    assert await client.run(r.table("docs").index_rename("kind", "category")) == {"renamed": 1}
    assert await client.run(r.table("docs").index_drop("tags")) == {"dropped": 1}
    assert sorted(await client.run(r.table("docs").index_list())) == ["category", "score_x2"]


async def test_table_config_system_table(client: Client, dbname: str) -> None:
    r = client.r
    await client.run(r.table_create("configured", primary_key="key"))
    await client.run(r.table("configured").index_create("kind"))
    await client.run(r.table("configured").index_wait())
    rows = await client.run(r.db("rethinkdb").table("table_config").filter({"db": dbname}))
    assert len(rows) == 1
    row = rows[0]
    for field in (
        "db",
        "name",
        "id",
        "primary_key",
        "indexes",
        "durability",
        "shards",
        "write_acks",
        "write_hook",
    ):
        assert field in row, field
    assert (row["db"], row["name"], row["primary_key"]) == (dbname, "configured", "key")
    assert row["indexes"] == ["kind"]
    by_id = await client.run(r.db("rethinkdb").table("table_config").get(row["id"]))
    assert by_id["name"] == "configured"
