"""Grouped data (``group(...)``'s value) and how terms treat it: most apply group by
group (:meth:`reql_eval.Ctx.per_group`), some take it whole, some reduce each group."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rethinkdb.ql2_pb2 import Term

if TYPE_CHECKING:
    from .reql_eval import Ctx

T = Term.TermType


class Grouped:
    """``group(...)``'s value: group key -> (group value, the group's datum), in key
    order. Most terms applied to it apply to each group (:meth:`Ctx.ev`)."""

    __slots__ = ("groups", "stream")

    def __init__(self, groups: dict[tuple, tuple[Any, Any]], stream: bool = False) -> None:
        self.groups = dict(sorted(groups.items(), key=lambda kv: kv[0]))
        self.stream = stream  # GROUPED_STREAM until a terminal makes it GROUPED_DATA

    def as_datum(self) -> dict:
        data = [[group, value] for group, value in self.groups.values()]
        return {"$reql_type$": "GROUPED_DATA", "data": data}


# Terms that take grouped data as a whole instead of group by group.
WHOLE_GROUPS = frozenset(
    {T.UNGROUP, T.TYPE_OF, T.INFO, T.LITERAL, T.ERROR, T.MAKE_ARRAY, T.FUNCALL, T.GROUP}
)
# Terms that keep a grouped stream a stream (the others reduce each group).
GROUP_TRANSFORMS = frozenset(
    {
        T.MAP,
        T.CONCAT_MAP,
        T.FILTER,
        T.PLUCK,
        T.WITHOUT,
        T.MERGE,
        T.WITH_FIELDS,
        T.HAS_FIELDS,
        T.GET_FIELD,
        T.BRACKET,
        T.ZIP,
        T.ORDER_BY,
        T.LIMIT,
        T.SKIP,
        T.SLICE,
        T.DISTINCT,
    }
)


# Terms that leave a group out of their grouped result when this says so (given
# the group's value and the other arguments): sum('field') of a group without it.
GROUP_SKIPS: dict[int, Callable[[Ctx, list], bool]] = {}
