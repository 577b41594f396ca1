"""Term handlers on arrays: append/prepend, difference, the set_* operations,
insert_at/delete_at/change_at and contains."""

from __future__ import annotations

from typing import Any

from .reql_datum import reql_eq, sort_key
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


def _index(i: int, size: int, inclusive_end: bool = False) -> int:
    index = i + size if i < 0 else i
    if index < 0 or index > size - (0 if inclusive_end else 1):
        raise ReqlNonExistenceError(f"Index `{i}` out of bounds for array of size: `{size}`.")
    return index


@handler(T.INSERT_AT, 3)
def insert_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    items.insert(_index(as_int(args[1]), len(items), True), ctx.datum(args[2]))
    return items


@handler(T.DELETE_AT, 2, 3)
def delete_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    start = _index(as_int(args[1]), len(items))
    end = _index(as_int(args[2]), len(items), True) if len(args) > 2 else start + 1
    del items[start:end]
    return items


@handler(T.CHANGE_AT, 3)
def change_at(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    items = list(_array(ctx, args[0]))
    items[_index(as_int(args[1]), len(items))] = ctx.datum(args[2])
    return items


@handler(T.CONTAINS, 1, None)
def contains(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    items = as_array(args[0])
    for wanted in args[1:]:
        if isinstance(wanted, Func):
            found = False
            for item in items:
                try:
                    if wanted(item) not in (None, False):
                        found = True
                        break
                except ReqlNonExistenceError:
                    continue
        else:
            value = ctx.datum(wanted)
            found = any(reql_eq(item, value) for item in items)
        if not found:
            return False
    return True
