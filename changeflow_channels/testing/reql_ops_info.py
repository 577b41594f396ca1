"""The ``info`` term: what the real server tells about any value (tables and
databases with their ids, table slices with their bounds, datums as printed)."""

from __future__ import annotations

from typing import Any

from .reql_datum import PTYPE, Bound, binary_bytes, pretty, short
from .reql_eval import Ctx, DbRef, Func, SingleSel, Stream, T, handler, kind_of
from .reql_store import Table, TableLike


def _db_info(ctx: Ctx, name: str) -> dict:
    return {"type": "DB", "name": name, "id": ctx.store.db_id(name)}


def _table_info(ctx: Ctx, table: TableLike) -> dict:
    is_user = isinstance(table, Table)
    return {
        "type": "TABLE",
        "name": table.name,
        "primary_key": table.primary_key,
        "db": _db_info(ctx, table.db),
        "id": table.id,
        "doc_count_estimates": [len(table.scan())],
        "indexes": sorted(table.indexes) if is_user else [],
    }


def _slice_info(ctx: Ctx, value: Stream) -> dict:
    assert value.table is not None
    spec = value.slice
    info: dict[str, Any] = {
        "type": "TABLE_SLICE",
        "table": _table_info(ctx, value.table),
        "index": spec.index,
        "sorting": spec.sorting,
    }
    if spec.bounds is None:
        info["left_bound_type"] = info["right_bound_type"] = "unbounded"
        return info
    low, high, left_open, right_closed = spec.bounds
    for side, bound, is_open in (("left", low, left_open), ("right", high, not right_closed)):
        if isinstance(bound, Bound):
            unbounded = (bound.name == "MINVAL") == (side == "left")
            info[f"{side}_bound_type"] = "unbounded" if unbounded else "unachievable"
        else:
            info[f"{side}_bound"] = bound
            info[f"{side}_bound_type"] = "open" if is_open else "closed"
    return info


@handler(T.INFO, 1)
def info(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    value = args[0]
    if isinstance(value, DbRef):
        return _db_info(ctx, value.name)
    if isinstance(value, Stream) and value.table is not None:
        if value.kind == "TABLE":
            return _table_info(ctx, value.table)
        if value.kind == "TABLE_SLICE":
            return _slice_info(ctx, value)
        if value.kind.startswith("SELECTION"):
            return {"type": value.kind, "table": _table_info(ctx, value.table)}
    if isinstance(value, SingleSel):
        return {"type": "SELECTION<OBJECT>", "table": _table_info(ctx, value.table)}
    kind = kind_of(value)
    result: dict[str, Any] = {"type": kind}
    if isinstance(value, Func):
        result["source_code"] = short(value.body)
    elif isinstance(value, (Stream, Bound)) or value is None or hasattr(value, "notes"):
        pass
    else:
        if isinstance(value, dict) and value.get(PTYPE) == "BINARY":
            result["count"] = len(binary_bytes(value))
        result["value"] = pretty(value, arrays=True)
    return result
