"""Subscription filters, and what a change looks like through one.

    {"status": "open", "total": {"gt": 100}, "tag": {"in": ["a", "b"]}}

Each top-level field of the document is compared with ``eq``, ``ne``, ``lt``,
``le``, ``gt``, ``ge`` or ``in`` (a bare value means ``eq``); all conditions
must hold. A change is seen through a filter on both of its sides: a document
that starts matching arrives as ``add``, one that stops matching as ``remove``,
so the client's view always equals the filtered table.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "in": lambda value, choices: value in choices,
}
MAX_CONDITIONS = 32
_MISSING = object()


class FilterError(ValueError):
    """A filter we cannot apply; the message says why."""


def _check_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, bool | int | float | str):
        return
    raise FilterError(f"{where} must be a string, a number, a boolean or null")


class Filter:
    """A parsed filter: ``matches(document)``."""

    def __init__(self, conditions: list[tuple[str, str, Any]]) -> None:
        self.conditions = conditions

    def matches(self, document: Any) -> bool:
        if not isinstance(document, dict):
            return False
        for field, op, expected in self.conditions:
            value = document.get(field, _MISSING)
            if value is _MISSING:
                return False
            try:
                if not OPERATORS[op](value, expected):
                    return False
            except TypeError:  # e.g. "a" < 3: different types never match
                return False
        return True


def parse_filter(spec: Any) -> Filter | None:
    """``None`` for no filter; raises ``FilterError`` for anything malformed."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not spec:
        raise FilterError("filter must be a non-empty object of field conditions")
    conditions: list[tuple[str, str, Any]] = []
    for field, condition in spec.items():
        if not isinstance(field, str) or not field:
            raise FilterError("filter fields must be non-empty strings")
        operations = condition if isinstance(condition, dict) else {"eq": condition}
        if not operations:
            raise FilterError(f"filter condition for {field!r} is empty")
        for op, expected in operations.items():
            if op not in OPERATORS:
                raise FilterError(
                    f"unknown filter operator {op!r} for {field!r}; expected one of {', '.join(OPERATORS)}"
                )
            if op == "in":
                if not isinstance(expected, list) or len(expected) > 1000:
                    raise FilterError(f"{field!r} 'in' needs a list (of at most 1000 values)")
                for item in expected:
                    _check_value(item, f"values of {field!r} 'in'")
            else:
                _check_value(expected, f"{field!r} {op}")
            conditions.append((field, op, expected))
    if len(conditions) > MAX_CONDITIONS:
        raise FilterError(f"a filter may have at most {MAX_CONDITIONS} conditions")
    return Filter(conditions)


def seen_through(change: dict[str, Any], visible: Callable[[Any], bool]) -> dict[str, Any] | None:
    """The change as a client that sees only ``visible`` documents must get it (or None)."""
    old = change.get("old_val")
    new = change.get("new_val")
    old = old if old is not None and visible(old) else None
    new = new if new is not None and visible(new) else None
    if old is None and new is None:
        return None
    if old is None:
        kind = "initial" if change.get("type") == "initial" else "add"
    elif new is None:
        kind = "remove"
    else:
        kind = change.get("type", "change")
    return {**change, "type": kind, "old_val": old, "new_val": new}
