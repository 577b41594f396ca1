"""``group`` and ``ungroup``. Grouped data (:class:`Grouped`) goes through every
other term group by group (``group('a').count()``, ``.map(...).sum()``): see
:meth:`Ctx.per_group`."""

from __future__ import annotations

from itertools import product
from typing import Any

from .reql_datum import sort_key
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import (
    Ctx,
    Func,
    Grouped,
    T,
    as_array,
    as_bool,
    as_str,
    handler,
    literal_type_error,
)
from .reql_ops_obj import field_of
from .reql_ops_select import as_table, index_of
from .reql_ops_seq import seq_target
from .reql_store import Table


def _key_fn(ctx: Ctx, spec: Any) -> Any:
    """A field name, a function, or any other value (a constant group)."""
    if isinstance(spec, Func):
        return spec
    value = ctx.datum(spec)
    if isinstance(value, str):
        return lambda row: field_of(row, value)
    return lambda row: value


def _keys_of(row: Any, fns: list, multi: bool, extra: list) -> list:
    """The groups a row goes to: one value per function (null when the row lacks
    it); with ``multi`` an array value puts the row in a group per element."""
    parts = []
    for fn in fns:
        try:
            parts.append(fn(row))
        except ReqlNonExistenceError:
            parts.append(None)
    parts.extend(extra)
    if not multi:
        return [parts[0] if len(parts) == 1 else parts]
    choices = [(p or [None]) if isinstance(p, list) else [p] for p in parts]
    return [c[0] if len(c) == 1 else list(c) for c in product(*choices)]


@handler(T.GROUP, 1, None)
def group(ctx: Ctx, args: list, opts: dict, scope: dict) -> Grouped:
    if isinstance(args[0], Grouped):
        raise ReqlQueryLogicError(
            "Cannot call `group` on the output of `group` (did you mean to `ungroup`?)."
        )
    fns = [_key_fn(ctx, spec) for spec in args[1:]]
    multi = as_bool(opts["multi"]) if "multi" in opts else False
    index_name = as_str(opts["index"]) if "index" in opts else None
    if not fns and index_name is None:
        raise ReqlQueryLogicError("Cannot group by nothing.")
    rows: list[tuple[Any, list]] = []
    if index_name is not None:
        source = as_table(args[0])
        if index_name == source.primary_key:
            pk = source.primary_key
            rows = [(doc, [doc[pk]]) for doc in source.scan()]
        else:
            index = index_of(source, index_name)
            assert isinstance(source, Table)
            rows = [
                (source.docs[p], [value])
                for _key, (value, pks) in sorted(index.entries.items())
                for p in sorted(pks)
            ]
    else:
        rows = [(row, []) for row in as_array(seq_target(args[0]))]
    groups: dict[tuple, tuple[Any, list]] = {}
    for row, extra in rows:
        for key in _keys_of(row, fns, multi, extra):
            entry = groups.setdefault(sort_key(key), (key, []))
            entry[1].append(row)
    return Grouped(groups, stream=True)


@handler(T.UNGROUP, 1)
def ungroup(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    target = args[0]
    if not isinstance(target, Grouped):
        raise literal_type_error(target, "GROUPED_DATA")
    return [{"group": g, "reduction": value} for g, value in target.groups.values()]
