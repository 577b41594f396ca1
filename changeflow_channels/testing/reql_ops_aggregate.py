"""Term handlers that aggregate sequences: count, sum, avg, min, max, distinct,
is_empty, union and reduce."""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from .reql_datum import PTYPE, binary_bytes, num, reql_eq, sort_key, truthy
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import (
    GROUP_SKIPS,
    Ctx,
    Func,
    SingleSel,
    Stream,
    T,
    as_array,
    as_num,
    as_str,
    expect,
    handler,
)
from .reql_feeds import ChangeFeed
from .reql_feeds_union import UnionFeed
from .reql_ops_obj import field_of
from .reql_ops_order import order_key
from .reql_ops_select import Slice, as_slice, index_of, slice_stream
from .reql_ops_seq import predicate, seq_target


@handler(T.COUNT, 1, 2)
def count(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    target = args[0]
    if isinstance(target, SingleSel):
        target = target.doc
    if isinstance(target, str):
        return len(target)
    if isinstance(target, dict) and PTYPE not in target:
        return len(target)
    if isinstance(target, dict) and target.get(PTYPE) == "BINARY":
        return len(binary_bytes(target))
    items = as_array(seq_target(target))
    if len(args) == 1:
        return len(items)
    wanted = args[1]
    if isinstance(wanted, Func):
        test = predicate(ctx, wanted)
        return sum(1 for item in items if _counts(test, item))
    value = ctx.datum(wanted)
    return sum(1 for item in items if reql_eq(item, value))


def _counts(test: Callable[[Any], Any], item: Any) -> bool:
    try:
        return truthy(test(item))
    except ReqlNonExistenceError:
        return False  # as in filter: a row the predicate cannot judge is not counted


def _projected(ctx: Ctx, args: list) -> list[tuple[Any, Any]]:
    """(value, element) pairs; elements lacking the field are skipped."""
    items = as_array(seq_target(args[0]))
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


def _extreme(ctx: Ctx, args: list, opts: dict, name: str, pick: Callable) -> Any:
    target = args[0]
    if isinstance(target, Stream) and target.kind in ("TABLE", "TABLE_SLICE"):
        if len(args) == 1 or "index" in opts:
            # A table's min/max without a field reads its index's first/last row.
            source, spec = as_slice(target)
            index = as_str(opts.get("index", spec.index or source.primary_key))
            rows = slice_stream(source, Slice(index, "ASCENDING", spec.bounds)).items()
            if not rows:
                raise ReqlNonExistenceError(
                    f"Cannot take the {name} of an empty stream.  (If you passed `{name}` a "
                    "field name, it may be that no elements of the stream had that field.)"
                )
            doc = rows[0] if name == "min" else rows[-1]
            return SingleSel(source, doc.get(source.primary_key), doc)
    pairs = _projected(ctx, args)
    if not pairs:
        raise ReqlNonExistenceError(
            f"Cannot take the {name} of an empty stream.  (If you passed `{name}` a field "
            "name, it may be that no elements of the stream had that field.)"
        )
    return pick(pairs, key=lambda pair: sort_key(pair[0]))[1]


@handler(T.MIN, 1, 2)
def min_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _extreme(ctx, args, opts, "min", min)


@handler(T.MAX, 1, 2)
def max_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _extreme(ctx, args, opts, "max", max)


@handler(T.DISTINCT, 1)
def distinct(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    if "index" in opts:
        if not (isinstance(args[0], Stream) and args[0].kind in ("TABLE", "TABLE_SLICE")):
            raise ReqlQueryLogicError("Can only perform an indexed distinct on a TABLE.")
        source, spec = as_slice(args[0])
        name = as_str(opts["index"])
        if name == source.primary_key:
            return Stream.of([doc[name] for doc in slice_stream(source, spec).items()])
        index = index_of(source, name)
        values = [value for key, (value, _pks) in sorted(index.entries.items())]
        return Stream.of(values)
    unique = {sort_key(v): v for v in as_array(seq_target(args[0]))}
    items = [unique[k] for k in sorted(unique)]
    return items if isinstance(args[0], list) else Stream.of(items)


@handler(T.IS_EMPTY, 1)
def is_empty(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return not as_array(seq_target(args[0]))


@handler(T.UNION, 0, None)
def union(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    if any(isinstance(arg, ChangeFeed) for arg in args):
        # With a changefeed in it, the union is one (reql_feeds_union).
        return UnionFeed(
            [a if isinstance(a, ChangeFeed) else as_array(seq_target(a)) for a in args]
        )
    parts = [as_array(seq_target(arg)) for arg in args]
    interleave = opts.get("interleave", True)
    if isinstance(interleave, bool):
        out = [item for part in parts for item in part]
    else:
        out = _merge_ordered(ctx, parts, interleave)
    return out if all(isinstance(a, list) for a in args) else Stream.of(out)


def _merge_ordered(ctx: Ctx, parts: list[list], interleave: Any) -> list:
    """union(interleave=ordering): merge sequences that are each in that order."""
    specs = interleave if isinstance(interleave, list) else [interleave]
    keys = [order_key(ctx, spec) for spec in specs]

    def key_of(item: Any) -> tuple:
        return tuple(key(item) for key in keys)

    for part in parts:
        for before, after in pairwise(part):
            if key_of(after) < key_of(before):
                raise ReqlQueryLogicError(
                    "The streams given as arguments are not ordered by given ordering."
                )
    return [
        item
        for _key, _i, item in heapq.merge(
            *([(key_of(item), n, item) for item in part] for n, part in enumerate(parts))
        )
    ]


@handler(T.REDUCE, 2)
def reduce(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    items = as_array(seq_target(args[0]))
    if not items:
        raise ReqlNonExistenceError("Cannot reduce over an empty stream.")
    fn = args[1]
    if not isinstance(fn, Func):
        expect(fn, "FUNCTION")
    result = items[0]
    for item in items[1:]:
        result = fn(result, item)
    return result


def _group_has_values(ctx: Ctx, args: list) -> bool:
    """sum/avg/min/max of a field on grouped data leave out the groups where no row
    has it (the real server reduces the rows that have it, group by group)."""
    return len(args) == 1 or bool(_projected(ctx, args))


def _group_counts(ctx: Ctx, args: list) -> bool:
    """count(value) on grouped data leaves out the groups where nothing matches."""
    return len(args) == 1 or count(ctx, args, {}, {}) > 0


for _term in (T.SUM, T.AVG, T.MIN, T.MAX):
    GROUP_SKIPS[_term] = _group_has_values
GROUP_SKIPS[T.COUNT] = _group_counts
