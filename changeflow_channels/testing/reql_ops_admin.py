"""Administration terms: databases, tables, secondary indexes, config/status/wait."""

from __future__ import annotations

import json
from typing import Any

from .reql_datum import make_binary, sort_key
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import Ctx, DbRef, Func, Stream, T, as_bool, as_str, check, expect, handler
from .reql_ops_obj import field_of
from .reql_store import SYSTEM_DB, Index, Table, TableLike, check_name


def _db_arg(ctx: Ctx, args: list, count: int) -> tuple[str, list]:
    """Split ``[db?, *rest]``: the database is optional (defaults to the query's db)."""
    if len(args) > count:
        if not isinstance(args[0], DbRef):
            expect(args[0], "DATABASE")
        return args[0].name, args[1:]
    return ctx.default_db, args


def _user_table(value: Any) -> Table:
    if isinstance(value, Stream) and value.kind == "TABLE" and isinstance(value.table, Table):
        return value.table
    if isinstance(value, Stream) and value.kind == "TABLE":
        raise ReqlOpFailedError("System tables have no secondary indexes.")
    expect(value, "TABLE")
    raise AssertionError  # unreachable


# -- databases ------------------------------------------------------------------------


@handler(T.DB_CREATE, 1)
def db_create(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    database = ctx.store.create_db(as_str(args[0]))
    row = {"id": database.id, "name": database.name}
    return {"config_changes": [{"new_val": row, "old_val": None}], "dbs_created": 1}


@handler(T.DB_DROP, 1)
def db_drop(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    row, tables = ctx.store.drop_db(as_str(args[0]))
    return {
        "config_changes": [{"new_val": None, "old_val": row}],
        "dbs_dropped": 1,
        "tables_dropped": tables,
    }


@handler(T.DB_LIST, 0)
def db_list(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return ctx.store.db_names()


# -- tables ---------------------------------------------------------------------------


@handler(T.TABLE_CREATE, 1, 2)
def table_create(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    db_name, rest = _db_arg(ctx, args, 1)
    primary_key = as_str(opts.get("primary_key", "id"))
    table = ctx.store.create_table(db_name, as_str(rest[0]), primary_key)
    return {
        "config_changes": [{"new_val": table.config_row(), "old_val": None}],
        "tables_created": 1,
    }


@handler(T.TABLE_DROP, 1, 2)
def table_drop(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    db_name, rest = _db_arg(ctx, args, 1)
    row = ctx.store.drop_table(db_name, as_str(rest[0]))
    return {"config_changes": [{"new_val": None, "old_val": row}], "tables_dropped": 1}


@handler(T.TABLE_LIST, 0, 1)
def table_list(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    db_name, _ = _db_arg(ctx, args, 0)
    return ctx.store.table_names(db_name)


@handler(T.CONFIG, 1)
def config(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    target = args[0]
    if isinstance(target, DbRef):
        if target.name == SYSTEM_DB:
            raise ReqlOpFailedError("Database `rethinkdb` is special; you can't configure it.")
        database = ctx.store.db(target.name)
        return {"id": database.id, "name": database.name}
    return _user_table(target).config_row()


@handler(T.STATUS, 1)
def status(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return _user_table(args[0]).status_row()


@handler(T.WAIT, 0, 1)
def wait(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    # Tables are ready as soon as they exist here.
    if not args:
        return {"ready": sum(len(db.tables) for db in ctx.store.dbs.values())}
    target = args[0]
    if isinstance(target, DbRef):
        return {"ready": len(ctx.store.db(target.name).tables)}
    _user_table(target)
    return {"ready": 1}


@handler(T.SYNC, 1)
def sync(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    _user_table(args[0])
    return {"synced": 1}


# -- secondary indexes ---------------------------------------------------------------


def _index_function(ctx: Ctx, name: str, fn_term: Any) -> tuple[Any, Any]:
    """(stored term, document -> value) for an index on a field or a function."""
    if fn_term is None:

        def compute(doc: dict) -> Any:
            return field_of(doc, name)

        return name, compute
    check(fn_term)
    fn = ctx.ev(fn_term, {})
    if not isinstance(fn, Func):
        constant = ctx.datum(fn)
        return fn_term, lambda doc: constant
    return fn_term, fn


@handler(T.INDEX_CREATE, 2, 3, lazy=True)
def index_create(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    table = _user_table(ctx.ev(args[0], scope))
    name = as_str(ctx.ev(args[1], scope))
    multi = as_bool(ctx.ev(optargs["multi"], scope)) if "multi" in optargs else False
    if name == table.primary_key:
        raise ReqlQueryLogicError(f"Index name conflict: `{name}` is the name of the primary key.")
    if name in table.indexes:
        raise ReqlOpFailedError(f"Index `{name}` already exists on table `{table.qualified}`.")
    term, compute = _index_function(ctx, name, args[2] if len(args) > 2 else None)
    ctx.store.change_indexes(table, lambda: table.add_index(Index(name, term, compute, multi)))
    return {"created": 1}


@handler(T.INDEX_DROP, 2)
def index_drop(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    table = _user_table(args[0])
    name = as_str(args[1])
    if name not in table.indexes:
        # index_drop/index_rename say "does not exist"; reads say "was not found".
        raise ReqlOpFailedError(f"Index `{name}` does not exist on table `{table.qualified}`.")
    ctx.store.change_indexes(table, lambda: table.indexes.pop(name))
    return {"dropped": 1}


@handler(T.INDEX_RENAME, 3)
def index_rename(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    table = _user_table(args[0])
    old, new = as_str(args[1]), as_str(args[2])
    check_name(new, "Index")
    if old not in table.indexes:
        raise ReqlOpFailedError(f"Index `{old}` does not exist on table `{table.qualified}`.")
    if new in table.indexes and old != new:
        if opts.get("overwrite") is not True:
            raise ReqlOpFailedError(f"Index `{new}` already exists on table `{table.qualified}`.")

    def rename() -> None:
        index = table.indexes.pop(old)
        index.name = new
        table.indexes[new] = index

    ctx.store.change_indexes(table, rename)
    return {"renamed": 0 if old == new else 1}


@handler(T.INDEX_LIST, 1)
def index_list(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return sorted(_user_table(args[0]).indexes)


def _status_rows(table: TableLike, names: list[str]) -> list[dict]:
    wanted = names or sorted(table.indexes)
    rows = []
    for name in wanted:
        index = table.indexes.get(name)
        if index is None:
            raise ReqlOpFailedError(f"Index `{name}` was not found on table `{table.qualified}`.")
        function = json.dumps(index.function, separators=(",", ":"))
        rows.append(
            {
                "function": make_binary(function.encode("utf-8")),
                "geo": False,
                "index": name,
                "multi": index.multi,
                "outdated": False,
                "query": f"indexCreate({json.dumps(name)}, {function})",
                "ready": True,
            }
        )
    return sorted(rows, key=lambda row: sort_key(row["index"]))


@handler(T.INDEX_STATUS, 1, None)
def index_status(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return _status_rows(_user_table(args[0]), [as_str(a) for a in args[1:]])


@handler(T.INDEX_WAIT, 1, None)
def index_wait(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return _status_rows(_user_table(args[0]), [as_str(a) for a in args[1:]])
