"""Term handlers that aggregate sequences: count, sum, avg, min, max, distinct,
is_empty, union and reduce."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, num, reql_eq, sort_key, truthy
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import Ctx, Func, Stream, T, as_array, as_num, as_str, expect, handler
from .reql_ops_obj import field_of
from .reql_ops_seq import seq_target


@handler(T.COUNT, 1, 2)
def count(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    target = args[0]
    if isinstance(target, str):
        return len(target)
    if isinstance(target, dict) and PTYPE not in target:
        return len(target)
    items = as_array(seq_target(target))
    if len(args) == 1:
        return len(items)
    wanted = args[1]
    if isinstance(wanted, Func):
        return sum(1 for item in items if truthy(wanted(item)))
    value = ctx.datum(wanted)
    return sum(1 for item in items if reql_eq(item, value))


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
    unique = {sort_key(v): v for v in as_array(seq_target(args[0]))}
    items = [unique[k] for k in sorted(unique)]
    return items if isinstance(args[0], list) else Stream.of(items)


@handler(T.IS_EMPTY, 1)
def is_empty(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return not as_array(seq_target(args[0]))


@handler(T.UNION, 0, None)
def union(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    out: list = []
    for arg in args:
        out.extend(as_array(seq_target(arg)))
    return out if all(isinstance(a, list) for a in args) else Stream.of(out)


@handler(T.REDUCE, 2)
def reduce(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    items = as_array(seq_target(args[0]))
    if not items:
        raise ReqlQueryLogicError("Cannot reduce over an empty stream.")
    fn = args[1]
    if not isinstance(fn, Func):
        expect(fn, "FUNCTION")
    result = items[0]
    for item in items[1:]:
        result = fn(result, item)
    return result
