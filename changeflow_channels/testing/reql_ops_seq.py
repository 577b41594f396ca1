"""Term handlers on sequences: db/table/get/get_all/between, filter/map, ordering,
slicing and aggregation.

Reads of a table are :class:`Stream` values that remember their table, so that a
selection (``table``, ``filter``, ``get_all``, ``between``...) can still be written to
or followed with ``changes()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, num, pretty, reql_eq, sort_key, truthy, type_name
from .reql_errors import ReqlNonExistenceError, ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import (
    INFINITE,
    Ctx,
    DbRef,
    Func,
    Order,
    SingleSel,
    Stream,
    T,
    as_array,
    as_int,
    as_num,
    as_str,
    expect,
    handler,
)
from .reql_feeds import ChangeFeed
from .reql_ops_obj import field_of, lift
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


def _index_of(source: TableLike, name: str) -> Any:
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
        index = _index_of(source, index_name)

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
        values = _index_of(source, index_name).values

    def step(doc: Any) -> Any:
        return doc if any(inside(sort_key(v)) for v in values(doc)) else None

    def produce() -> list:
        return [d for d in source.scan() if step(d) is not None]

    return table_stream(source, produce, [step])


# -- filter / map ---------------------------------------------------------------------


def matches(doc: Any, pattern: dict) -> bool:
    """``filter({...})``: every field of the pattern is present and equal (nested
    objects match field by field)."""
    for key, want in pattern.items():
        have = field_of(doc, key)
        if isinstance(want, dict) and PTYPE not in want and isinstance(have, dict):
            if not matches(have, want):
                return False
        elif not reql_eq(have, want):
            return False
    return True


@handler(T.FILTER, 2, lazy=True)
def filter_(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    target = ctx.ev(args[0], scope)
    pred = ctx.ev(args[1], scope)
    test: Callable[[Any], Any]
    if isinstance(pred, Func):
        test = pred
    else:
        pattern = ctx.datum(pred)
        if isinstance(pattern, dict) and PTYPE not in pattern:

            def test_match(doc: Any) -> Any:
                return matches(doc, pattern)

            test = test_match
        else:

            def test_value(doc: Any) -> Any:
                return pattern

            test = test_value

    default_term = optargs.get("default", False)

    def keep(doc: Any) -> bool:
        try:
            return truthy(test(doc))
        except ReqlNonExistenceError:
            # filter's `default` decides about rows the predicate cannot judge;
            # r.error() there raises, as on the real server.
            return truthy(ctx.datum(ctx.ev(default_term, scope)))

    if isinstance(target, (SingleSel, dict)):
        expect(target, "SEQUENCE")
    return lift(ctx, target, keep, keep=True)


@handler(T.MAP, 2, None)
def map_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    fn = ctx.func(args[-1])
    if len(args) > 2:
        sequences = [as_array(s) for s in args[:-1]]
        return [fn(*items) for items in zip(*sequences, strict=False)]
    target = args[0]
    if isinstance(target, (SingleSel, dict)):
        expect(target, "SEQUENCE")
    return lift(ctx, target, fn)


@handler(T.CONCAT_MAP, 2)
def concat_map(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    fn = ctx.func(args[1])
    items = as_array(args[0])
    out: list = []
    for item in items:
        out.extend(as_array(fn(item)))
    return out if isinstance(args[0], list) else Stream.of(out)


# -- ordering and slicing ---------------------------------------------------------------


def _key_fn(ctx: Ctx, spec: Any) -> Callable[[Any], tuple]:
    getter: Callable[[Any], Any]
    if isinstance(spec, Func):
        getter = spec
    else:
        name = as_str(ctx.datum(spec))

        def field(doc: Any) -> Any:
            return field_of(doc, name)

        getter = field

    def key(doc: Any) -> tuple:
        try:
            return sort_key(getter(doc))
        except ReqlNonExistenceError:
            return MIN_KEY  # rows without the field sort first

    return key


def _derived(target: Any, items: Callable[[], list], kind: str | None = None) -> Any:
    """A sequence derived from ``target`` that is still a selection but no longer
    feedable (order_by, limit, skip, slice)."""
    if isinstance(target, list):
        return items()
    return Stream(
        items,
        table=target.table,
        writable=target.writable,
        steps=None,
        kind=kind or ("SELECTION<STREAM>" if target.writable else "STREAM"),
    )


def _seq_target(value: Any) -> Any:
    if isinstance(value, ChangeFeed):
        raise ReqlQueryLogicError(INFINITE)
    if isinstance(value, list) or isinstance(value, Stream):
        return value
    expect(value, "SEQUENCE")


@handler(T.ORDER_BY, 1, None)
def order_by(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = _seq_target(args[0])
    specs = [(a.descending, a.key) if isinstance(a, Order) else (False, a) for a in args[1:]]
    keys = [(desc, _key_fn(ctx, spec)) for desc, spec in specs]
    index_name = opts.get("index")
    if index_name is not None:
        source = as_table_for_index(target)
        index_desc = False
        if isinstance(index_name, Order):
            index_desc, index_name = index_name.descending, index_name.key
        index_name = as_str(index_name)
        if index_name == source.primary_key:

            def base() -> list:
                return source.scan()
        else:
            index = _index_of(source, index_name)

            def base() -> list:
                assert isinstance(source, Table)
                return [
                    source.docs[pk]
                    for _key, (_value, pks) in sorted(index.entries.items())
                    for pk in pks
                ]

        def produce() -> list:
            items = base()
            if index_desc:
                items = items[::-1]
            return _sorted(items, keys)

        return _derived(target, produce, "SELECTION<STREAM>")
    if not keys:
        raise ReqlQueryLogicError("Expected 2 or more arguments but found 1.")
    return _derived(target, lambda: _sorted(as_array(target), keys), "SELECTION<ARRAY>")


def as_table_for_index(target: Any) -> TableLike:
    if isinstance(target, Stream) and target.kind == "TABLE" and target.table is not None:
        return target.table
    raise ReqlQueryLogicError("Indexed order_by can only be performed on a TABLE or TABLE_SLICE.")


def _sorted(items: list, keys: list) -> list:
    out = list(items)
    for desc, key in reversed(keys):  # stable sorts, last key first
        out.sort(key=key, reverse=desc)
    return out


@handler(T.LIMIT, 2)
def limit(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target, count = _seq_target(args[0]), as_int(args[1])
    if count < 0:
        raise ReqlQueryLogicError(f"LIMIT takes a non-negative argument (got {count})")
    return _derived(target, lambda: as_array(target)[:count], _kind(target))


@handler(T.SKIP, 2)
def skip(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target, count = _seq_target(args[0]), as_int(args[1])
    if count < 0:
        raise ReqlQueryLogicError("Cannot use a negative left index on a stream.")
    return _derived(target, lambda: as_array(target)[count:], _kind(target))


def _kind(target: Any) -> str | None:
    return target.kind.replace("TABLE", "SELECTION<STREAM>") if isinstance(target, Stream) else None


@handler(T.SLICE, 2, 3)
def slice_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = args[0]
    start = as_int(args[1])
    end = as_int(args[2]) if len(args) > 2 else None
    right_closed = opts.get("right_bound", "open") == "closed"
    if end is not None and right_closed:
        end = None if end == -1 else end + 1
    if isinstance(target, str):
        return target[start:end]
    if isinstance(target, dict) and target.get(PTYPE) == "BINARY":
        from .reql_datum import binary_bytes, make_binary

        return make_binary(binary_bytes(target)[start:end])
    target = _seq_target(target)
    return _derived(target, lambda: as_array(target)[start:end], _kind(target))


def nth_of(ctx: Ctx, target: Any, index: int) -> Any:
    items = as_array(_seq_target(target))
    try:
        doc = items[index]
    except IndexError:
        raise ReqlNonExistenceError(f"Index out of bounds: {index}") from None
    if isinstance(target, Stream) and target.writable and target.table is not None:
        return SingleSel(target.table, doc.get(target.table.primary_key), doc)
    return doc


@handler(T.NTH, 2)
def nth(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return nth_of(ctx, args[0], as_int(args[1]))


# -- aggregation ----------------------------------------------------------------------


@handler(T.COUNT, 1, 2)
def count(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    target = args[0]
    if isinstance(target, str):
        return len(target)
    if isinstance(target, dict) and PTYPE not in target:
        return len(target)
    items = as_array(_seq_target(target))
    if len(args) == 1:
        return len(items)
    wanted = args[1]
    if isinstance(wanted, Func):
        return sum(1 for item in items if truthy(wanted(item)))
    value = ctx.datum(wanted)
    return sum(1 for item in items if reql_eq(item, value))


def _projected(ctx: Ctx, args: list) -> list[tuple[Any, Any]]:
    """(value, element) pairs; elements lacking the field are skipped."""
    items = as_array(_seq_target(args[0]))
    if len(args) == 1:
        return [(item, item) for item in items]
    getter = args[1] if isinstance(args[1], Func) else None
    name = None if getter else as_str(ctx.datum(args[1]))
    out = []
    for item in items:
        try:
            value = getter(item) if getter else field_of(item, name or "")
        except ReqlNonExistenceError:
            continue
        out.append((value, item))
    return out


@handler(T.SUM, 1, 2)
def sum_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return num(sum(as_num(value) for value, _ in _projected(ctx, args)))


@handler(T.AVG, 1, 2)
def avg(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    pairs = _projected(ctx, args)
    if not pairs:
        raise ReqlNonExistenceError(
            "Cannot take the average of an empty stream.  (If you passed `avg` a field "
            "name, it may be that no elements of the stream had that field.)"
        )
    return num(sum(as_num(v) for v, _ in pairs) / len(pairs))


def _extreme(ctx: Ctx, args: list, name: str, pick: Callable) -> Any:
    pairs = _projected(ctx, args)
    if not pairs:
        raise ReqlNonExistenceError(
            f"Cannot take the {name} of an empty stream.  (If you passed `{name}` a field "
            "name, it may be that no elements of the stream had that field.)"
        )
    return pick(pairs, key=lambda pair: sort_key(pair[0]))[1]


@handler(T.MIN, 1, 2)
def min_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _extreme(ctx, args, "min", min)


@handler(T.MAX, 1, 2)
def max_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _extreme(ctx, args, "max", max)


@handler(T.DISTINCT, 1)
def distinct(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    unique = {sort_key(v): v for v in as_array(_seq_target(args[0]))}
    items = [unique[k] for k in sorted(unique)]
    return items if isinstance(args[0], list) else Stream.of(items)


@handler(T.IS_EMPTY, 1)
def is_empty(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return not as_array(_seq_target(args[0]))


@handler(T.UNION, 0, None)
def union(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    out: list = []
    for arg in args:
        out.extend(as_array(_seq_target(arg)))
    return out if all(isinstance(a, list) for a in args) else Stream.of(out)


@handler(T.REDUCE, 2)
def reduce(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    items = as_array(_seq_target(args[0]))
    if not items:
        raise ReqlQueryLogicError("Cannot reduce over an empty stream.")
    fn = args[1]
    if not isinstance(fn, Func):
        expect(fn, "FUNCTION")
    result = items[0]
    for item in items[1:]:
        result = fn(result, item)
    return result


@handler(T.RANGE, 0, 2)
def range_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    if not args:
        raise ReqlQueryLogicError("Infinite `r.range()` is not supported by the ReQL test server.")
    bounds = [as_int(a) for a in args]
    return Stream.of(list(range(*bounds)))
