"""Administration terms: databases, tables, secondary indexes, config/status/wait."""

from __future__ import annotations

import json
from typing import Any

from .reql_check import check
from .reql_datum import binary_bytes, make_binary, sort_key, truthy
from .reql_determinism import deterministic
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import (
    PRECHECKS,
    Ctx,
    DbRef,
    Func,
    SingleSel,
    Stream,
    T,
    as_bool,
    as_num,
    as_str,
    expect,
    handler,
)
from .reql_ops_obj import field_of
from .reql_ops_reconfig import REPLICATION_OPTARGS, parse_replication, validate_replication
from .reql_store import SYSTEM_DB, Index, Table, TableLike, check_name
from .reql_write_result import durability_option


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


@handler(T.TABLE_CREATE, 1, 2, optargs=(*REPLICATION_OPTARGS, "primary_key", "durability"))
def table_create(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    replication = parse_replication(opts)
    primary_key = as_str(opts.get("primary_key", "id"))
    durability = durability_option(opts["durability"]) if "durability" in opts else "hard"
    db_name, rest = _db_arg(ctx, args, 1)
    name = as_str(rest[0])
    check_name(name, "Table")
    if db_name != SYSTEM_DB:
        ctx.store.db(db_name)
    validate_replication(replication)
    table = ctx.store.create_table(
        db_name, name, primary_key, durability=durability, shards=replication.shards
    )
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
def config(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = args[0]
    if isinstance(target, DbRef):
        if target.name == SYSTEM_DB:
            raise ReqlOpFailedError("Database `rethinkdb` is special; you can't configure it.")
        database = ctx.store.db(target.name)
        return {"id": database.id, "name": database.name}
    table = _user_table(target)
    # Its row of rethinkdb.table_config: `config().update(...)` writes there.
    return SingleSel(ctx.store.system["table_config"], table.id, table.config_row())


@handler(T.STATUS, 1)
def status(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return _user_table(args[0]).status_row()


WAIT_STATES = (
    "ready_for_outdated_reads",
    "ready_for_reads",
    "ready_for_writes",
    "all_replicas_ready",
)


@handler(T.WAIT, 0, 1, optargs=("timeout", "wait_for"))
def wait(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    # Tables are ready as soon as they exist here.
    if not args:
        raise ReqlQueryLogicError("`wait` can only be called on a table or database.")
    if "wait_for" in opts and as_str(opts["wait_for"]) not in WAIT_STATES:
        states = ", ".join(f"'{s}'" for s in WAIT_STATES[:-1])
        raise ReqlQueryLogicError(
            f"Unknown table readiness state: '{opts['wait_for']}', must be one of "
            f"{states}, or '{WAIT_STATES[-1]}'"
        )
    if "timeout" in opts:
        as_num(opts["timeout"])
    target = args[0]
    name = (
        target.name
        if isinstance(target, DbRef)
        else getattr(getattr(target, "table", None), "db", None)
    )
    if name == SYSTEM_DB:
        raise ReqlOpFailedError(
            "Database `rethinkdb` is special; the system tables in it are always available "
            "and don't need to be waited on."
        )
    if isinstance(target, DbRef):
        return {"ready": len(ctx.store.db(target.name).tables)}
    _user_table(target)
    return {"ready": 1}


@handler(T.SYNC, 1)
def sync(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    target = args[0]
    if isinstance(target, Stream) and target.kind == "TABLE" and target.table is not None:
        if target.table.db == SYSTEM_DB:
            raise ReqlOpFailedError("Artificial tables don't support `sync()`.")
    _user_table(target)
    return {"synced": 1}


# -- secondary indexes ---------------------------------------------------------------


def _index_function(ctx: Ctx, name: str, fn_term: Any) -> tuple[Any, Any]:
    """(stored term, document -> value) for an index on a field or a function."""
    if fn_term is None:

        def compute(doc: dict) -> Any:
            return field_of(doc, name)

        return name, compute
    check(fn_term)
    # Evaluated in a pristine context: the run() optargs of the query that creates the
    # index (array_limit...) do not apply when it computes documents' values later.
    fn = Ctx(ctx.store, ctx.default_db).ev(fn_term, {})
    if not isinstance(fn, Func):
        constant = ctx.datum(fn)
        if isinstance(constant, dict) and constant.get("$reql_type$") == "BINARY":
            # index_status's `function`: the index's own function, recreated.
            stored = _stored_function(constant)
            if isinstance(stored, str):  # an index on a field
                return stored, lambda doc: field_of(doc, stored)
            return _index_function(ctx, name, stored)
        return fn_term, lambda doc: constant
    return fn_term, fn


def _stored_function(value: dict) -> Any:
    """The term index_status gave as `function` (the test server stores it as JSON)."""
    try:
        term = json.loads(binary_bytes(value))
    except ValueError:
        raise ReqlQueryLogicError("Binary blob passed to index create is not a function.") from None
    return term


def _precheck_index_function(args: list, optargs: dict) -> None:
    # The function is checked, not a query that gives one (index_status's `function`).
    function = args[2] if len(args) > 2 else None
    if type(function) is list and function[:1] == [T.FUNC] and not deterministic(function):
        raise ReqlQueryLogicError(
            "Could not prove function deterministic.  Index functions must be deterministic."
        )


PRECHECKS[T.INDEX_CREATE] = _precheck_index_function


@handler(T.INDEX_CREATE, 2, 3, lazy=True)
def index_create(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    table = _user_table(ctx.ev(args[0], scope))
    name = as_str(ctx.ev(args[1], scope))
    multi = truthy(ctx.datum(ctx.ev(optargs["multi"], scope))) if "multi" in optargs else False
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
    for name in (old, new):
        if name == table.primary_key:
            raise ReqlQueryLogicError(
                f"Index name conflict: `{name}` is the name of the primary key."
            )
    overwrite = as_bool(opts["overwrite"]) if "overwrite" in opts else False
    check_name(new, "Index")
    if old not in table.indexes or (new in table.indexes and old != new and not overwrite):
        raise ReqlOpFailedError(
            f"Index `{old}` does not exist on table `{table.qualified}`."
            if overwrite
            else f"Index `{old}` does not exist or index `{new}` already exists "
            f"on table `{table.qualified}`."
        )

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
