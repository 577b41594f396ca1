"""Term handlers that join sequences: eq_join (through a table's index), inner_join,
outer_join and zip."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import sort_key, truthy
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import Ctx, Func, Stream, T, as_array, as_bool, as_obj, as_str, handler
from .reql_ops_obj import deep_merge, field_of
from .reql_ops_select import as_table, index_of
from .reql_ops_seq import seq_target
from .reql_store import Table


def _result(target: Any, items: list) -> Any:
    return items if isinstance(target, list) else Stream.of(items)


@handler(T.EQ_JOIN, 3)
def eq_join(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    left = seq_target(args[0])
    source = as_table(args[2])
    index_name = as_str(opts["index"]) if "index" in opts else source.primary_key
    if "ordered" in opts:
        as_bool(opts["ordered"])  # rows come in the left sequence's order either way
    spec = args[1]
    key_of: Callable[[Any], Any]
    if not isinstance(spec, Func):
        name = as_str(ctx.datum(spec))

        def key_of(doc: Any) -> Any:
            return field_of(doc, name)
    else:
        key_of = spec
    if index_name == source.primary_key:

        def lookup(key: Any) -> list:
            doc = source.get(key)
            return [] if doc is None else [doc]
    else:
        index = index_of(source, index_name)

        def lookup(key: Any) -> list:
            assert isinstance(source, Table)
            entry = index.entries.get(sort_key(key))
            return [] if entry is None else [source.docs[pk] for pk in sorted(entry[1])]

    out: list = []
    for row in as_array(left):
        try:
            key = key_of(row)
        except ReqlNonExistenceError:
            continue
        if key is None:
            continue
        out.extend({"left": row, "right": match} for match in lookup(key))
    return _result(left, out)


def _pairs(ctx: Ctx, args: list, *, outer: bool) -> Any:
    left = seq_target(args[0])
    right = as_array(seq_target(args[1]))
    test = ctx.strict_func(args[2])
    out: list = []
    for row in as_array(left):
        matched = [{"left": row, "right": other} for other in right if truthy(test(row, other))]
        out.extend(matched)
        if outer and not matched:
            out.append({"left": row})
    return _result(left, out)


@handler(T.INNER_JOIN, 3)
def inner_join(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _pairs(ctx, args, outer=False)


@handler(T.OUTER_JOIN, 3)
def outer_join(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _pairs(ctx, args, outer=True)


@handler(T.ZIP, 1)
def zip_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = seq_target(args[0])
    out = []
    for item in as_array(target):
        if "left" not in as_obj(item):
            raise ReqlQueryLogicError("ZIP can only be called on the result of a join.")
        out.append(deep_merge(item["left"], item["right"]) if "right" in item else item["left"])
    return _result(target, out)
