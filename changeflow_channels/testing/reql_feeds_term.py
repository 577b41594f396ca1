"""The ``changes`` term: which feed a value gets, and the checks of its options.

- ``table.get(key)``: a point feed (ATOM_FEED);
- a table or a selection of one (``filter``, ``map``, ``between``, ``get_all``...):
  a range feed applying the selection's transforms to each change;
- ``table.order_by(index=...).limit(n)``: a top-n feed (``reql_feeds_topn``).
"""

from __future__ import annotations

from typing import Any

from .reql_datum import truthy, type_name
from .reql_determinism import functions_deterministic
from .reql_errors import ReqlQueryLogicError, ReqlResourceLimitError
from .reql_eval import Ctx, SingleSel, Stream, T, as_int, handler, literal_type_error
from .reql_feeds import DEFAULT_QUEUE_SIZE, ChangeFeed
from .reql_feeds_topn import TopNFeed
from .reql_store import Table

ARRAY_SIZE_LIMIT = 100_000
# What the real server says of changes() on a sequence it cannot follow (sorted in
# memory, sliced, not read from a table).
EAGER = "Cannot call `changes` on an eager stream."
OPTARGS = (
    "squash",
    "changefeed_queue_size",
    "include_initial",
    "include_offsets",
    "include_states",
    "include_types",
)


def _squash(opts: dict) -> bool | float:
    if "squash" not in opts:
        return False
    value = opts["squash"]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if value < 0:
            raise ReqlQueryLogicError(
                "Expected BOOL or a positive NUMBER but found a negative NUMBER."
            )
        return float(value)
    raise ReqlQueryLogicError(f"Expected BOOL or NUMBER but found {type_name(value)}.")


def _queue_size(ctx: Ctx, opts: dict) -> int:
    value = opts.get("changefeed_queue_size")
    if value is None:
        value = ctx.global_opt("changefeed_queue_size", DEFAULT_QUEUE_SIZE)
    size = as_int(value)
    if size < 1:
        raise ReqlQueryLogicError(f"Illegal changefeed queue size `{size}`.  (Must be >= 1.)")
    return size


def _flag(opts: dict, name: str) -> bool:
    # The real server's optarg flags are truthy: anything but false and null is true.
    return truthy(opts[name]) if name in opts else False


# Stream transforms a changefeed cannot follow, by term.
UNFOLLOWABLE = {T.CONCAT_MAP: "concat_map", T.ZIP: "zip"}


def _refuse_transforms(term: Any) -> None:
    """changes() after concat_map or zip (on the chain of first arguments) is
    refused by name, as the real server does."""
    while type(term) is list and term and isinstance(term[0], int):
        name = UNFOLLOWABLE.get(term[0])
        if name is not None:
            raise ReqlQueryLogicError(f"Cannot call `changes` after `{name}`.")
        args = term[1] if len(term) > 1 and isinstance(term[1], list) else []
        term = args[0] if args else None


def _no_offsets(offsets: bool, kind: str) -> None:
    if offsets:
        raise ReqlQueryLogicError(f"Cannot include offsets for {kind} subs.")


@handler(T.CHANGES, 1, optargs=OPTARGS, lazy=True)
def changes(ctx: Ctx, args: list, optargs: dict, scope: dict) -> ChangeFeed:
    opts = {k: ctx.datum(ctx.ev(v, scope)) for k, v in optargs.items()}
    squash = _squash(opts)
    common: dict[str, Any] = {
        "include_initial": _flag(opts, "include_initial"),
        "include_states": _flag(opts, "include_states"),
        "include_types": _flag(opts, "include_types"),
        "queue_size": _queue_size(ctx, opts),
        "squash": squash,
    }
    offsets = _flag(opts, "include_offsets")
    target = ctx.ev(args[0], scope)
    if isinstance(target, SingleSel):
        _no_offsets(offsets, "point")
        return ChangeFeed(target.table, target.key, point=True, **common)
    if isinstance(target, ChangeFeed):
        raise ReqlQueryLogicError(EAGER)
    _refuse_transforms(args[0])
    if not isinstance(target, (Stream, list)):
        raise literal_type_error(target, "SELECTION")
    if not isinstance(target, Stream) or target.table is None:
        raise ReqlQueryLogicError(EAGER)
    if not functions_deterministic(args[0]):
        raise ReqlQueryLogicError("Cannot call `changes` after a non-deterministic function.")
    spec = target.slice
    if spec is not None and spec.sorting != "UNORDERED":
        table = target.table
        if target.limit is not None and isinstance(table, Table):
            if target.limit > ARRAY_SIZE_LIMIT:
                raise ReqlResourceLimitError(
                    f"Array size limit `{ARRAY_SIZE_LIMIT}` exceeded.  (`.limit(X).changes()` "
                    "is illegal if X is larger than the array size limit.)"
                )
            index = spec.index or table.primary_key
            descending = spec.sorting == "DESCENDING"
            steps = list(target.steps or [])
            return TopNFeed(
                table,
                index,
                descending,
                target.limit,
                steps=steps,
                include_offsets=offsets,
                **common,
            )
    if target.steps is not None:
        _no_offsets(offsets, "range")
        return ChangeFeed(target.table, steps=list(target.steps), **common)
    if target.limit is not None:
        raise ReqlQueryLogicError(
            "Cannot get changes on the first elements of an unordered stream."
        )
    raise ReqlQueryLogicError(EAGER)
