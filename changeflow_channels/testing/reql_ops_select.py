"""Term handlers that select from tables: r.db, table, get, get_all and between
(with r.minval / r.maxval).

Reads of a table are :class:`Stream` values that remember their table, so that a
selection (``table``, ``filter``, ``get_all``, ``between``...) can still be written to
or followed with ``changes()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .reql_datum import MAXVAL, MINVAL, PTYPE, Bound, pretty, sort_key, type_name
from .reql_errors import ReqlNonExistenceError, ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import (
    Ctx,
    DbRef,
    SingleSel,
    Stream,
    T,
    as_str,
    expect,
    handler,
    literal_type_error,
)
from .reql_store import Table, TableLike

MIN_KEY: tuple = MINVAL.key
MAX_KEY: tuple = MAXVAL.key
READ_MODES = ("majority", "single", "outdated")


@dataclass
class Slice:
    """A TABLE_SLICE: a table read through one index, maybe bounded, maybe ordered."""

    index: str | None = None
    sorting: str = "UNORDERED"  # ASCENDING, DESCENDING
    bounds: tuple | None = None  # (low, high, left_open, right_closed), values as given


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
    raise literal_type_error(value, "TABLE")


def as_slice(value: Any) -> tuple[TableLike, Slice]:
    """A TABLE or TABLE_SLICE argument (between, order_by with an index)."""
    if isinstance(value, Stream) and value.table is not None:
        if value.kind == "TABLE":
            return value.table, Slice()
        if value.kind == "TABLE_SLICE":
            return value.table, value.slice
    raise literal_type_error(value, "TABLE_SLICE")


def _inside(key: tuple, bounds: tuple | None) -> bool:
    if bounds is None:
        return True
    low, high, left_open, right_closed = bounds
    above = key > low if left_open else key >= low
    below = key <= high if right_closed else key < high
    return above and below


def slice_stream(source: TableLike, spec: Slice) -> Stream:
    """The documents of a slice: in index order (one per matching index value of a
    multi index, ties in primary key order), reversed when DESCENDING."""
    pk = source.primary_key
    index_name = spec.index or pk
    bounds = spec.bounds
    if bounds is not None:
        bounds = (bound_key(bounds[0]), bound_key(bounds[1]), bounds[2], bounds[3])

    if index_name == pk:

        def produce() -> list:
            if bounds is None:
                docs = source.scan()
            else:
                docs = [d for d in source.scan() if _inside(sort_key(d.get(pk)), bounds)]
            return docs[::-1] if spec.sorting == "DESCENDING" else docs

        def step(doc: Any) -> Any:
            return doc if _inside(sort_key(doc.get(pk)), bounds) else None
    else:
        index = index_of(source, index_name)

        def produce() -> list:
            assert isinstance(source, Table)
            out: list[Any] = []
            for key in sorted(index.entries):
                if _inside(key, bounds):
                    out.extend(source.docs[p] for p in sorted(index.entries[key][1]))
            return out[::-1] if spec.sorting == "DESCENDING" else out

        def step(doc: Any) -> Any:
            keys = (sort_key(v) for v in index.values(doc))
            return doc if any(_inside(k, bounds) for k in keys) else None

    return Stream(
        produce,
        table=source,
        writable=not source.is_system,
        steps=[step],
        kind="TABLE_SLICE",
        slice=spec,
    )


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
    if "use_outdated" in opts or "use_outdated" in ctx.global_optargs:
        raise ReqlQueryLogicError(
            "The `use_outdated` optarg is no longer supported.  Use the `read_mode` optarg instead."
        )
    if "read_mode" in opts:
        mode = as_str(opts["read_mode"])
        if mode not in READ_MODES:
            raise ReqlQueryLogicError(
                f"Read mode `{mode}` unrecognized "
                '(options are "majority", "single", and "outdated").'
            )
    if "identifier_format" in opts:
        id_format = as_str(opts["identifier_format"])
        if id_format not in ("name", "uuid"):
            raise ReqlQueryLogicError(
                f'Identifier format `{id_format}` unrecognized (options are "name" and "uuid").'
            )
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
    source = ctx.store.table(db_name, name, opts.get("identifier_format"))
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
    for key in keys:
        if key is None:
            raise ReqlNonExistenceError("Keys cannot be NULL.")
    index_name = as_str(opts.get("index", source.primary_key))
    unique = list({sort_key(k): k for k in keys}.items())
    wanted = {key for key, _ in unique}
    if index_name == source.primary_key:
        pk = source.primary_key

        def produce() -> list:
            docs = (source.get(k) for _key, k in unique if not isinstance(k, Bound))
            return [d for d in docs if d is not None]

        def step(doc: Any) -> Any:
            return doc if sort_key(doc.get(pk)) in wanted else None
    else:
        index = index_of(source, index_name)

        def produce() -> list:
            out: list[Any] = []
            assert isinstance(source, Table)
            for key, _value in unique:
                entry = index.entries.get(key)
                if entry is not None:
                    out.extend(source.docs[pk] for pk in sorted(entry[1]))
            return out

        def step(doc: Any) -> Any:
            return doc if any(sort_key(v) in wanted for v in index.values(doc)) else None

    return table_stream(source, produce, [step])


def bound_key(value: Any) -> tuple:
    return sort_key(value)


@handler(T.MINVAL, 0)
def minval(ctx: Ctx, args: list, opts: dict, scope: dict) -> Bound:
    return MINVAL


@handler(T.MAXVAL, 0)
def maxval(ctx: Ctx, args: list, opts: dict, scope: dict) -> Bound:
    return MAXVAL


def bound_closed(opts: dict, name: str, default: str) -> bool:
    """True when the bound is closed."""
    value = as_str(opts.get(name, default))
    if value not in ("open", "closed"):
        raise ReqlQueryLogicError(
            f"Expected `open` or `closed` for optarg `{name}` (got `{pretty(value)}`)."
        )
    return value == "closed"


@handler(T.BETWEEN, 3)
def between(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    source, spec = as_slice(args[0])
    left_closed = bound_closed(opts, "left_bound", "closed")
    right_closed = bound_closed(opts, "right_bound", "open")
    low, high = ctx.datum(args[1]), ctx.datum(args[2])
    if low is None or high is None:
        raise ReqlQueryLogicError(
            "Cannot use `null` in BETWEEN, use `r.minval` or `r.maxval` to denote unboundedness."
        )
    if "index" in opts:
        index_name = as_str(opts["index"])
    else:
        index_name = spec.index or source.primary_key
    if spec.bounds is not None:
        raise ReqlQueryLogicError("Cannot perform multiple BETWEENs on the same table.")
    if spec.index is not None and spec.index != index_name:
        raise ReqlQueryLogicError(
            f"Cannot call BETWEEN on index `{index_name}` after ordering on index `{spec.index}`."
        )
    if index_name != source.primary_key:
        index_of(source, index_name)
    bounds = (low, high, not left_closed, right_closed)
    return slice_stream(source, Slice(index_name, spec.sorting, bounds))
