"""Term handlers that transform sequences: filter, map and concat_map, ordering
(order_by, r.asc / r.desc), slicing (limit, skip, slice, nth) and r.range.

``filter`` keeps a table read a selection that can still be written to or followed
with ``changes()``; ordering and slicing keep it writable only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, reql_eq, sort_key, truthy
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import (
    INFINITE,
    Ctx,
    Func,
    Order,
    SingleSel,
    Stream,
    T,
    as_array,
    as_int,
    as_str,
    expect,
    handler,
)
from .reql_feeds import ChangeFeed
from .reql_ops_obj import field_of, lift
from .reql_ops_select import MIN_KEY, index_of
from .reql_store import Table, TableLike

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


def seq_target(value: Any) -> Any:
    if isinstance(value, ChangeFeed):
        raise ReqlQueryLogicError(INFINITE)
    if isinstance(value, list) or isinstance(value, Stream):
        return value
    expect(value, "SEQUENCE")


@handler(T.ORDER_BY, 1, None)
def order_by(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = seq_target(args[0])
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
            index = index_of(source, index_name)

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
    target, count = seq_target(args[0]), as_int(args[1])
    if count < 0:
        raise ReqlQueryLogicError(f"LIMIT takes a non-negative argument (got {count})")
    return _derived(target, lambda: as_array(target)[:count], _kind(target))


@handler(T.SKIP, 2)
def skip(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target, count = seq_target(args[0]), as_int(args[1])
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
    target = seq_target(target)
    return _derived(target, lambda: as_array(target)[start:end], _kind(target))


def nth_of(ctx: Ctx, target: Any, index: int) -> Any:
    items = as_array(seq_target(target))
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


@handler(T.ASC, 1)
def asc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(False, args[0])


@handler(T.DESC, 1)
def desc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(True, args[0])


# -- generating ------------------------------------------------------------------------


@handler(T.RANGE, 0, 2)
def range_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    if not args:
        raise ReqlQueryLogicError("Infinite `r.range()` is not supported by the ReQL test server.")
    bounds = [as_int(a) for a in args]
    return Stream.of(list(range(*bounds)))
