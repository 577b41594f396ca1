"""Writes to ``rethinkdb.table_config`` rows (``table.config().update({...})``).

The test server lets a user change what it keeps of a table's configuration:
``name`` (renaming the table), ``durability`` and ``write_acks``; ``shards`` go
through ``reconfigure`` and the other fields cannot be changed here. Deleting a
row of ``table_config`` or ``db_config`` drops the table or database, inserting
one (its id generated) creates it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .reql_datum import reql_eq, short
from .reql_errors import ReqlOpFailedError, ReqlRuntimeError
from .reql_store import NAME_RE, SystemTable, Table
from .reql_write_result import WriteResult

EDITABLE = ("durability", "write_acks", "name")
WRONG_FORMAT = "The change you're trying to make to `rethinkdb.table_config` has the wrong format. "


def is_table_config(source: Any) -> bool:
    return isinstance(source, SystemTable) and source.name == "table_config"


def is_config(source: Any) -> bool:
    """``table_config`` or ``db_config``: rows that can be added and deleted."""
    return isinstance(source, SystemTable) and source.name in ("table_config", "db_config")


def delete_config_rows(
    store: Any, source: SystemTable, rows: list[dict], result: WriteResult
) -> dict:
    """Drop the databases (``db_config``) or tables (``table_config``) of ``rows``."""
    for row in rows:
        try:
            if source.name == "db_config":
                store.drop_db(row["name"])
            else:
                store.drop_table(row["db"], row["name"])
        except ReqlRuntimeError as exc:
            result.error(exc.message, row, row)
            continue
        result.change("deleted", row, None)
    return result.as_dict()


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return isinstance(value, str)


def _wrong_format(table: str, problem: str) -> ReqlOpFailedError:
    return ReqlOpFailedError(
        f"The change you're trying to make to `rethinkdb.{table}` has the wrong format. {problem}"
    )


def _create_db(store: Any, doc: dict) -> dict:
    extra = [key for key in doc if key != "name"]
    if extra:
        raise _wrong_format("db_config", "Unexpected key(s): " + " ".join(extra))
    if not isinstance(doc.get("name"), str):
        raise _wrong_format("db_config", "Expected a field named `name`.")
    database = store.create_db(doc["name"])
    return {"id": database.id, "name": database.name}


TABLE_FIELDS = ("name", "db", "primary_key", "durability", "write_acks")


def _create_table(store: Any, doc: dict) -> dict:
    extra = [key for key in doc if key not in TABLE_FIELDS]
    if extra:
        raise ReqlOpFailedError(
            "Creating a table through `rethinkdb.table_config` with "
            f"`{'`, `'.join(extra)}` is not supported by the ReQL test server."
        )
    for field in ("name", "db"):
        if not isinstance(doc.get(field), str):
            raise _wrong_format("table_config", f"Expected a field named `{field}`.")
    durability = doc.get("durability", "hard")
    if durability not in ("hard", "soft"):
        raise _wrong_format(
            "table_config", f'In `durability`: Expected "soft" or "hard", got: {short(durability)}'
        )
    table = store.create_table(
        doc["db"], doc["name"], doc.get("primary_key", "id"), durability=durability
    )
    table.write_acks = doc.get("write_acks", "majority")
    return table.config_row()


def insert_config_rows(store: Any, source: SystemTable, docs: list, result: WriteResult) -> dict:
    """Create a database or table per document (the database generates its id)."""
    for doc in docs:
        if isinstance(doc, dict) and "id" in doc and not _is_uuid(doc["id"]):
            result.error(
                _wrong_format(
                    source.name, f"In `id`: Expected a UUID; got {short(doc['id'])}"
                ).message
            )
            continue
        if not isinstance(doc, dict) or "id" in doc:
            what = "database" if source.name == "db_config" else "table"
            result.error(
                f"There is no existing {what} with the given ID. To create a new {what} by "
                f"inserting into `rethinkdb.{source.name}`, you must let the database "
                "generate the primary key automatically."
            )
            continue
        try:
            if source.name == "db_config":
                row = _create_db(store, doc)
            else:
                row = _create_table(store, doc)
        except ReqlRuntimeError as exc:
            result.error(exc.message)
            continue
        result.generated.append(row["id"])
        result.change("inserted", None, row)
    return result.as_dict()


def _table_of(store: Any, key: Any) -> Table | None:
    for database in store.dbs.values():
        for table in database.tables.values():
            if table.id == key:
                return table
    return None


def _check(store: Any, table: Table, old: dict, new: Any) -> None:
    if not isinstance(new, dict):
        raise ReqlOpFailedError(WRONG_FORMAT + "Expected an object.")
    extra = [name for name in new if name not in old]
    if extra:
        raise ReqlOpFailedError(WRONG_FORMAT + "Unexpected key(s): " + " ".join(extra))
    name = new.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ReqlOpFailedError(
            WRONG_FORMAT
            + f"In `name`: {short(name)} is not a valid table name; Use A-Z, a-z, 0-9, _ and - only"
        )
    if new.get("durability") not in ("hard", "soft"):
        raise ReqlOpFailedError(
            WRONG_FORMAT
            + f'In `durability`: Expected "soft" or "hard", got: {short(new.get("durability"))}'
        )
    if new.get("write_acks") not in ("majority", "single"):
        raise ReqlOpFailedError(
            WRONG_FORMAT
            + f'In `write_acks`: Expected "single" or "majority", got: {short(new.get("write_acks"))}'
        )
    if not reql_eq(old.get("primary_key"), new.get("primary_key")):
        raise ReqlOpFailedError("It's illegal to change a table's primary key")
    for field in sorted(old):
        if field in EDITABLE or reql_eq(old.get(field), new.get(field)):
            continue
        if field == "shards":
            raise ReqlOpFailedError(
                "Changing `shards` in `table_config` is not supported by the ReQL test "
                "server; use `reconfigure`."
            )
        raise ReqlOpFailedError(
            f"Changing `{field}` in `table_config` is not supported by the ReQL test server."
        )
    if name != table.name and name in store.db(table.db).tables:
        raise ReqlOpFailedError(
            f"Can't rename table `{table.db}.{table.name}` to `{table.db}.{name}` because "
            f"table `{table.db}.{name}` already exists."
        )


def write_table_config(
    store: Any, keys: list[Any], change: Callable[[dict], Any], result: WriteResult
) -> dict:
    """Apply ``change`` (old row -> new row, or raises) to the config of each table."""
    for key in keys:
        table = _table_of(store, key)
        if table is None:
            result.change("skipped", None, None)
            continue
        old = table.config_row()
        try:
            new = change(old)
            _check(store, table, old, new)
        except ReqlRuntimeError as exc:
            result.error(exc.message, old, old)
            continue
        if reql_eq(old, new):
            result.change("unchanged", old, old)
            continue

        def apply(table: Table = table, new: dict = new) -> None:
            table.durability = new["durability"]
            table.write_acks = new["write_acks"]
            if new["name"] != table.name:
                store.rename_table(table, new["name"])

        store.change_config(table, apply)
        result.change("replaced", old, table.config_row())
    return result.as_dict()
