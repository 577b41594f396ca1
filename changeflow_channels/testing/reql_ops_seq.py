"""Term handlers that transform sequences: filter, map and concat_map, ordering
(order_by, r.asc / r.desc), slicing (limit, skip, slice, nth) and r.range.

``filter`` keeps a table read a selection that can still be written to or followed
with ``changes()``; ordering and slicing keep it writable only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import (
    PTYPE,
    Literal,
    binary_bytes,
    make_binary,
    reql_eq,
    truthy,
    type_name,
)
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import (
    INFINITE,
    Ctx,
    Func,
    Grouped,
    SingleSel,
    Stream,
    T,
    as_array,
    as_int,
    handler,
    literal_type_error,
    plural,
    raw_type,
)
from .reql_feeds import ChangeFeed
from .reql_ops_control import fallback
from .reql_ops_lazy import drop, is_infinite, lazy_map, take
from .reql_ops_obj import field_of, lift, strip_literals
from .reql_ops_select import bound_closed

# -- filter / map ---------------------------------------------------------------------


def matches(doc: Any, pattern: dict) -> bool:
    """``filter({...})``: every field of the pattern is present and equal (nested
    objects match field by field)."""
    for key, want in pattern.items():
        have = field_of(doc, key)
        if isinstance(want, Literal):  # r.literal in a pattern: equal as a whole
            if not reql_eq(have, strip_literals(want.value)):
                return False
        elif isinstance(want, dict) and PTYPE not in want and isinstance(have, dict):
            if not matches(have, want):
                return False
        elif not reql_eq(have, want):
            return False
    return True


def predicate(ctx: Ctx, pred: Any) -> Callable[[Any], Any]:
    """``filter``'s (and ``count``'s) test: a function, or an object to match. A
    function whose body is an object literal matches the object it builds."""
    if isinstance(pred, Func):
        body = pred.body
        if type(body) is dict or (type(body) is list and body[0] in (T.MAKE_OBJ, T.DATUM)):

            def test_built(doc: Any) -> Any:
                pattern = pred(doc)
                if isinstance(pattern, dict) and PTYPE not in pattern:
                    return matches(doc, pattern)
                return pattern

            return test_built
        return pred
    if isinstance(pred, Literal):  # r.literal(...): the whole row equal to it

        def test_literal(doc: Any) -> Any:
            return reql_eq(doc, strip_literals(pred.value))

        return test_literal
    pattern = ctx.datum(pred)
    if isinstance(pattern, dict) and PTYPE not in pattern:

        def test_match(doc: Any) -> Any:
            return matches(doc, pattern)

        return test_match

    def test_value(doc: Any) -> Any:
        return pattern

    return test_value


@handler(T.FILTER, 2, lazy=True)
def filter_(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    target = ctx.ev(args[0], scope)
    test = predicate(ctx, ctx.ev(args[1], scope))
    default_term = optargs.get("default", False)

    def keep(doc: Any) -> bool:
        try:
            return truthy(test(doc))
        except ReqlNonExistenceError as exc:
            # filter's `default` decides about rows the predicate cannot judge;
            # r.error() there raises (an empty one: this very error).
            return truthy(ctx.datum(fallback(ctx, default_term, scope, exc.message, exc)))

    if isinstance(target, Grouped):
        groups = target.groups.items()
        kept = {key: (group, [d for d in value if keep(d)]) for key, (group, value) in groups}
        return Grouped(kept, stream=target.stream)
    if isinstance(target, (SingleSel, dict)):
        not_a_sequence(target)
    return lift(ctx, target, keep, keep=True)


@handler(T.MAP, 2, None)
def map_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    fn = ctx.strict_func(args[-1])
    count = len(args) - 1
    if fn.params and len(fn.params) != count:
        raise ReqlQueryLogicError(
            f"The function passed to `map` expects {plural(len(fn.params), 'argument')}, "
            f"but {plural(count, 'sequence')} {'was' if count == 1 else 'were'} found."
        )
    if any(is_infinite(s) for s in args[:-1]):
        return lazy_map(fn, [s if is_infinite(s) else as_array(seq_target(s)) for s in args[:-1]])
    if len(args) > 2:
        sequences = [as_array(s) for s in args[:-1]]
        return [fn(*items) for items in zip(*sequences, strict=False)]
    target = args[0]
    if isinstance(target, (SingleSel, dict)):
        not_a_sequence(target)
    return lift(ctx, target, fn)


@handler(T.CONCAT_MAP, 2)
def concat_map(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    fn = ctx.strict_func(args[1])
    items = as_array(seq_target(args[0]))
    out: list = []
    for item in items:
        out.extend(as_array(seq_target(fn.call(item))))
    return out if isinstance(args[0], list) else Stream.of(out)


# -- slicing --------------------------------------------------------------------------


def derived(target: Any, items: Callable[[], list], kind: str | None = None) -> Any:
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
    not_a_sequence(value)


def not_a_sequence(value: Any) -> None:
    """The real server's error for a value that is not a sequence."""
    if raw_type(value) == "DATUM":
        raise ReqlQueryLogicError(f"Cannot convert {type_name(value)} to SEQUENCE")
    raise literal_type_error(value, "SEQUENCE")


@handler(T.LIMIT, 2)
def limit(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    count = as_int(args[1])
    if count < 0:
        raise ReqlQueryLogicError(f"LIMIT takes a non-negative argument (got {count})")
    if isinstance(args[0], ChangeFeed):
        return args[0].limit(count)  # the feed ends after `count` items
    target = seq_target(args[0])
    if is_infinite(target):
        return take(target, count)
    out = derived(target, lambda: as_array(target)[:count], _kind(target))
    if isinstance(out, Stream):
        out.limit = count  # changes() follows the top `count` of an ordered slice
        if isinstance(target, Stream) and target.slice is not None:
            if target.slice.sorting != "UNORDERED":
                # The transforms since the table, for the top-n changefeed.
                out.slice, out.steps = target.slice, target.steps
    return out


@handler(T.SKIP, 2)
def skip(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    if isinstance(args[0], ChangeFeed) and as_int(args[1]) >= 0:
        return args[0].skip(as_int(args[1]))  # the feed leaves out its first items
    target, count = seq_target(args[0]), as_int(args[1])
    if count < 0:
        raise ReqlQueryLogicError("Cannot use a negative left index on a stream.")
    if is_infinite(target):
        return drop(target, count)
    return derived(target, lambda: as_array(target)[count:], _kind(target))


def _kind(target: Any) -> str | None:
    return target.kind.replace("TABLE", "SELECTION<STREAM>") if isinstance(target, Stream) else None


def _slice_index(index: int, size: int, bump: bool) -> int:
    """A datum slice's bound: negative counts from the end; an open left or closed
    right bound moves one place (not when the index fell off the front)."""
    if index < 0:
        if -index > size:
            return 0
        index += size
    return index + 1 if bump else index


@handler(T.SLICE, 2, 3)
def slice_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = args[0]
    start = as_int(args[1])
    left_open = not bound_closed(opts, "left_bound", "closed")
    right_open = not bound_closed(opts, "right_bound", "open") if len(args) > 2 else False
    end = as_int(args[2]) if len(args) > 2 else -1
    if isinstance(target, SingleSel):
        target = target.doc
    if isinstance(target, (str, dict, list)):
        if isinstance(target, str):
            size = len(target)
        elif isinstance(target, list):
            size = len(target)
        elif target.get(PTYPE) == "BINARY":
            size = len(binary_bytes(target))
        else:
            raise ReqlQueryLogicError(
                f"Expected ARRAY, BINARY, or STRING, but found {type_name(target)}."
            )
        low = _slice_index(start, size, left_open)
        high = min(_slice_index(end, size, not right_open), size)
        if isinstance(target, dict):
            return make_binary(binary_bytes(target)[low:high] if low <= high else b"")
        return target[low:high] if low <= high else target[:0]
    if raw_type(target) == "DATUM":
        raise ReqlQueryLogicError(
            f"Expected ARRAY, BINARY, or STRING, but found {type_name(target)}."
        )
    target = seq_target(target)
    if start < 0:
        raise ReqlQueryLogicError("Cannot use a negative left index on a stream.")
    low = start + 1 if left_open else start
    if end < -1:
        raise ReqlQueryLogicError("Cannot use a right index < -1 on a stream.")
    if end == -1:
        if right_open:
            raise ReqlQueryLogicError("Cannot slice to an open right index of -1 on a stream.")
        stop = None
    else:
        stop = end if right_open else end + 1
    return derived(target, lambda: as_array(target)[low:stop], _kind(target))


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
