"""Term handlers on arrays: append/prepend, difference, the set_* operations,
insert_at/delete_at/change_at and contains."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import reql_eq, sort_key, truthy
from .reql_errors import ReqlNonExistenceError
from .reql_eval import Ctx, Func, T, as_array, as_int, expect, handler

# -- arrays ---------------------------------------------------------------------------


def _array(ctx: Ctx, value: Any) -> list:
    value = ctx.datum(value)
    if not isinstance(value, list):
        expect(value, "ARRAY")
    return value


@handler(T.APPEND, 2)
def append(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return [*_array(ctx, args[0]), ctx.datum(args[1])]


@handler(T.PREPEND, 2)
def prepend(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return [ctx.datum(args[1]), *_array(ctx, args[0])]


@handler(T.DIFFERENCE, 2)
def difference(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    drop = {sort_key(v) for v in _array(ctx, args[1])}
    return [v for v in _array(ctx, args[0]) if sort_key(v) not in drop]


def _distinct(items: list) -> list:
    seen: dict[tuple, Any] = {}
    for item in items:
        seen.setdefault(sort_key(item), item)
    return list(seen.values())


@handler(T.SET_INSERT, 2)
def set_insert(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return _distinct([*_array(ctx, args[0]), ctx.datum(args[1])])


@handler(T.SET_UNION, 2)
def set_union(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return _distinct(_array(ctx, args[0]) + _array(ctx, args[1]))


@handler(T.SET_INTERSECTION, 2)
def set_intersection(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    keep = {sort_key(v) for v in _array(ctx, args[1])}
    return [v for v in _distinct(_array(ctx, args[0])) if sort_key(v) in keep]


@handler(T.SET_DIFFERENCE, 2)
def set_difference(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    drop = {sort_key(v) for v in _array(ctx, args[1])}
    return [v for v in _distinct(_array(ctx, args[0])) if sort_key(v) not in drop]


def _canonical(i: int, size: int) -> int:
    """A negative index counts from the end (``size`` counts the slots, as the real
    server's canonicalize)."""
    if i >= 0:
        return i
    if -i > size:
        raise ReqlNonExistenceError(f"Index out of bounds: {i}")
    return size + i


def _check(index: int, size: int, *, end: bool = False) -> int:
    if index > size or (index == size and not end):
        raise ReqlNonExistenceError(f"Index `{index}` out of bounds for array of size: `{size}`.")
    return index


@handler(T.INSERT_AT, 3)
def insert_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    index = _check(_canonical(as_int(args[1]), len(items) + 1), len(items), end=True)
    items.insert(index, ctx.datum(args[2]))
    return items


@handler(T.SPLICE_AT, 3)
def splice_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    index = _check(_canonical(as_int(args[1]), len(items) + 1), len(items), end=True)
    items[index:index] = _array(ctx, args[2])
    return items


@handler(T.DELETE_AT, 2, 3)
def delete_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    size = len(items)
    start = _canonical(as_int(args[1]), size)
    if len(args) == 2:
        del items[_check(start, size)]
        return items
    stop = _canonical(as_int(args[2]), size)
    _check(start, size, end=True)
    _check(stop, size, end=True)
    if start > stop:
        raise ReqlNonExistenceError(f"Start index `{start}` is greater than end index `{stop}`.")
    del items[start:stop]
    return items


@handler(T.CHANGE_AT, 3)
def change_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    items[_check(_canonical(as_int(args[1]), len(items)), len(items))] = ctx.datum(args[2])
    return items


@handler(T.OFFSETS_OF, 2)
def offsets_of(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    wanted = args[1]
    test: Callable[[Any], Any]
    if isinstance(wanted, Func):
        test = wanted
    else:
        value = ctx.strict(wanted)

        def test_value(item: Any) -> bool:
            return reql_eq(item, value)

        test = test_value

    items = as_array(args[0])
    return [i for i, item in enumerate(items) if truthy(test(item))]


@handler(T.CONTAINS, 1, None)
def contains(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    """Every argument (a value or a predicate) matches an element of its own."""
    items = list(as_array(args[0]))
    for wanted in args[1:]:
        test: Callable[[Any], Any]
        if isinstance(wanted, Func):
            test = wanted
        else:
            value = ctx.strict(wanted)

            def test_value(item: Any, value: Any = value) -> bool:
                return reql_eq(item, value)

            test = test_value
        for i, item in enumerate(items):
            try:
                found = truthy(test(item))
            except ReqlNonExistenceError:
                found = False
            if found:
                del items[i]
                break
        else:
            return False
    return True
