"""Term handlers that order sequences: order_by (fields, functions, r.asc/r.desc, and
an index, with more keys ordering the rows of one index value) and r.asc/r.desc."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import sort_key
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import Ctx, Func, Order, Stream, T, as_array, as_str, handler
from .reql_ops_obj import field_of
from .reql_ops_select import MIN_KEY, Slice, as_slice, index_of, slice_stream
from .reql_ops_seq import derived, seq_target
from .reql_store import TableLike


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


class _Descending:
    """A sort key that orders the other way (``r.desc`` among other keys)."""

    __slots__ = ("key",)

    def __init__(self, key: tuple) -> None:
        self.key = key

    def __lt__(self, other: _Descending) -> bool:
        return other.key < self.key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and other.key == self.key

    __hash__ = None  # type: ignore[assignment]


def order_key(ctx: Ctx, spec: Any) -> Callable[[Any], Any]:
    """A field name, a function, or r.asc/r.desc of one, as one sort key."""
    if isinstance(spec, Order):
        key = _key_fn(ctx, spec.key)
        if spec.descending:
            return lambda doc: _Descending(key(doc))
        return key
    return _key_fn(ctx, spec)


@handler(T.ORDER_BY, 1, None)
def order_by(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = seq_target(args[0])
    specs = [(a.descending, a.key) if isinstance(a, Order) else (False, a) for a in args[1:]]
    keys = [(desc, _key_fn(ctx, spec)) for desc, spec in specs]
    index_name = opts.get("index")
    if index_name is not None:
        source, spec = as_table_for_index(target)
        sorting = "ASCENDING"
        if isinstance(index_name, Order):
            sorting = "DESCENDING" if index_name.descending else "ASCENDING"
            index_name = index_name.key
        index_name = as_str(index_name)
        if spec.sorting != "UNORDERED":
            raise ReqlQueryLogicError(
                "Cannot perform multiple indexed ORDER_BYs on the same table."
            )
        if spec.index is not None and spec.index != index_name:
            raise ReqlQueryLogicError(
                f"Cannot order by index `{index_name}` after calling BETWEEN on index "
                f"`{spec.index}`."
            )
        ordered = slice_stream(source, Slice(index_name, sorting, spec.bounds))
        if not keys:
            return ordered
        index_key = _index_key(source, index_name)

        def produce() -> list:
            # The index orders; the other keys order the rows of one index value.
            groups: list[list] = []
            last: Any = None
            for doc in ordered.items():
                key = index_key(doc)
                if groups and key == last:
                    groups[-1].append(doc)
                else:
                    groups.append([doc])
                    last = key
            return [doc for group in groups for doc in _sorted(group, keys)]

        return derived(ordered, produce, "SELECTION<STREAM>")
    if not keys:
        raise ReqlQueryLogicError("Must specify something to order by.")
    return derived(target, lambda: _sorted(as_array(target), keys), "SELECTION<ARRAY>")


def _index_key(source: TableLike, name: str) -> Callable[[Any], Any]:
    if name == source.primary_key:
        return lambda doc: sort_key(doc.get(name))
    index = index_of(source, name)

    def key(doc: Any) -> Any:
        return tuple(sort_key(v) for v in index.values(doc))

    return key


def as_table_for_index(target: Any) -> tuple[TableLike, Slice]:
    if isinstance(target, Stream) and target.table is not None:
        if target.kind in ("TABLE", "TABLE_SLICE"):
            return as_slice(target)
    raise ReqlQueryLogicError(
        "Indexed order_by can only be performed on a TABLE or TABLE_SLICE. Make sure "
        "order_by comes before any transformations (such as map) or filters."
    )


def _sorted(items: list, keys: list) -> list:
    out = list(items)
    for desc, key in reversed(keys):  # stable sorts, last key first
        out.sort(key=key, reverse=desc)
    return out


@handler(T.ASC, 1)
def asc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(False, args[0])


@handler(T.DESC, 1)
def desc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(True, args[0])
