"""Term handlers that select from tables: r.db, table, get, get_all and between
(with r.minval / r.maxval).

Reads of a table are :class:`Stream` values that remember their table, so that a
selection (``table``, ``filter``, ``get_all``, ``between``...) can still be written to
or followed with ``changes()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, pretty, sort_key, type_name
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import Ctx, DbRef, SingleSel, Stream, T, as_str, expect, handler
from .reql_store import Table, TableLike

# r.minval / r.maxval: sort keys below and above every datum key (ranks are 0..6).
MIN_KEY: tuple = (-1,)
MAX_KEY: tuple = (99,)


class Bound:
    def __init__(self, key: tuple) -> None:
        self.key = key


def check_pk(value: Any) -> None:
    """Primary keys are numbers, strings, bools, arrays or pseudo-types."""
    if value is None or (isinstance(value, dict) and PTYPE not in value):
        raise ReqlQueryLogicError(
            "Primary keys must be either a number, string, bool, pseudotype or array "
            f"(got type {type_name(value)}):\n{pretty(value)}"
        )


def as_table(value: Any) -> TableLike:
    if isinstance(value, Stream) and value.kind == "TABLE" and value.table is not None:
        return value.table
    expect(value, "TABLE")
    raise AssertionError  # unreachable


def table_stream(table: TableLike, items: Callable[[], list], steps: list | None) -> Stream:
    return Stream(
        items, table=table, writable=not table.is_system, steps=steps, kind="SELECTION<STREAM>"
    )


# -- sources --------------------------------------------------------------------------


@handler(T.DB, 1)
def db(ctx: Ctx, args: list, opts: dict, scope: dict) -> DbRef:
    from .reql_store import check_name

    name = as_str(args[0])
    check_name(name, "Database")
    return DbRef(name)


@handler(T.TABLE, 1, 2)
def table(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    if len(args) == 2:
        if not isinstance(args[0], DbRef):
            expect(args[0], "DATABASE")
        db_name, name = args[0].name, as_str(args[1])
    else:
        db_name, name = ctx.default_db, as_str(args[0])
    from .reql_store import SYSTEM_DB, check_name

    check_name(name, "Table")
    if db_name != SYSTEM_DB:
        ctx.store.db(db_name)  # "Database `x` does not exist." comes first
    source = ctx.store.table(db_name, name)
    return Stream(source.scan, table=source, writable=not source.is_system, steps=[], kind="TABLE")


@handler(T.GET, 2)
def get(ctx: Ctx, args: list, opts: dict, scope: dict) -> SingleSel:
    source = as_table(args[0])
    key = ctx.datum(args[1])
    check_pk(key)
    return SingleSel(source, key, source.get(key))


def index_of(source: TableLike, name: str) -> Any:
    index = source.indexes.get(name)
    if index is None:
        raise ReqlOpFailedError(f"Index `{name}` was not found on table `{source.qualified}`.")
    return index


@handler(T.GET_ALL, 1, None)
def get_all(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    source = as_table(args[0])
    keys = [ctx.datum(k) for k in args[1:]]
    index_name = as_str(opts.get("index", source.primary_key))
    wanted = {sort_key(k) for k in keys}
    if index_name == source.primary_key:
        pk = source.primary_key

        def produce() -> list:
            docs = (source.get(k) for k in dict.fromkeys(keys, None))
            return [d for d in docs if d is not None]

        def step(doc: Any) -> Any:
            return doc if sort_key(doc.get(pk)) in wanted else None
    else:
        index = index_of(source, index_name)

        def produce() -> list:
            out: list[Any] = []
            assert isinstance(source, Table)
            for key in dict.fromkeys(sort_key(k) for k in keys):
                entry = index.entries.get(key)
                if entry is not None:
                    out.extend(source.docs[pk] for pk in entry[1])
            return out

        def step(doc: Any) -> Any:
            return doc if any(sort_key(v) in wanted for v in index.values(doc)) else None

    return table_stream(source, produce, [step])


def _bound_key(value: Any) -> tuple:
    return value.key if isinstance(value, Bound) else sort_key(value)


@handler(T.MINVAL, 0)
def minval(ctx: Ctx, args: list, opts: dict, scope: dict) -> Bound:
    return Bound(MIN_KEY)


@handler(T.MAXVAL, 0)
def maxval(ctx: Ctx, args: list, opts: dict, scope: dict) -> Bound:
    return Bound(MAX_KEY)


@handler(T.BETWEEN, 3)
def between(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    source = as_table(args[0])
    low, high = _bound_key(args[1]), _bound_key(args[2])
    left_open = opts.get("left_bound", "closed") == "open"
    right_closed = opts.get("right_bound", "open") == "closed"
    index_name = as_str(opts.get("index", source.primary_key))

    def inside(key: tuple) -> bool:
        above = key > low if left_open else key >= low
        below = key <= high if right_closed else key < high
        return above and below

    if index_name == source.primary_key:
        pk = source.primary_key

        def values(doc: Any) -> list:
            return [doc.get(pk)]
    else:
        values = index_of(source, index_name).values

    def step(doc: Any) -> Any:
        return doc if any(inside(sort_key(v)) for v in values(doc)) else None

    def produce() -> list:
        return [d for d in source.scan() if step(d) is not None]

    return table_stream(source, produce, [step])
