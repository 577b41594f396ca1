"""What kind of value a ReQL value is (``type_of``, the real server's raw kinds) and
the argument coercions of term handlers (``as_str``, ``as_int``...), with the real
server's error texts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .reql_datum import short, type_name
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import INFINITE, DbRef, Func, Grouped, Order, SingleSel, Stream

if TYPE_CHECKING:
    from .reql_eval import Ctx


def kind_of(value: Any) -> str:
    """``type_of`` of any value."""
    if isinstance(value, Stream):
        return value.kind
    if isinstance(value, SingleSel):
        return "SELECTION<OBJECT>"
    if isinstance(value, Func):
        return "FUNCTION"
    if isinstance(value, DbRef):
        return "DB"
    if isinstance(value, Order):
        return "ORDERING"
    if hasattr(value, "notes"):
        return "STREAM"
    if isinstance(value, Grouped):
        return "GROUPED_STREAM" if value.stream else "GROUPED_DATA"
    return type_name(value)


def raw_type(value: Any) -> str:
    """The real server's value kind (DATUM, SEQUENCE, SELECTION, TABLE_SLICE ...)."""
    if isinstance(value, Stream):
        if value.kind.startswith("SELECTION"):
            return "SELECTION"
        return {"TABLE": "TABLE", "TABLE_SLICE": "TABLE_SLICE"}.get(value.kind, "SEQUENCE")
    if isinstance(value, SingleSel):
        return "SINGLE_SELECTION"
    if isinstance(value, Func):
        return "FUNCTION"
    if isinstance(value, DbRef):
        return "DATABASE"
    if hasattr(value, "notes"):
        return "STREAM"  # a changefeed
    return "DATUM"


def print_value(value: Any) -> str:
    if isinstance(value, DbRef):
        return f'db("{value.name}")'
    if isinstance(value, Stream) and value.table is not None:
        name = value.table.name
        return f'table("{name}")' if value.kind == "TABLE" else f"SELECTION ON table({name})"
    if isinstance(value, SingleSel):
        return short(value.doc)
    if raw_type(value) == "DATUM" and not isinstance(value, Order):
        try:
            return short(value)
        except (TypeError, ValueError):
            pass
    return f"VALUE {raw_type(value)}"


def literal_type_error(value: Any, wanted: str) -> ReqlQueryLogicError:
    """The real server's error for a value of the wrong kind (its message holds the value)."""
    return ReqlQueryLogicError(
        f"Expected type {wanted} but found {raw_type(value)}:\n{print_value(value)}"
    )


# -- argument coercion -------------------------------------------------------------------


def expect(value: Any, wanted: str) -> None:
    if raw_type(value) not in ("DATUM", "SINGLE_SELECTION"):
        raise literal_type_error(value, "DATUM")  # a table or database, not a value
    # A null where a value of a type was wanted is a non-existence error there.
    error = ReqlNonExistenceError if value is None else ReqlQueryLogicError
    raise error(f"Expected type {wanted} but found {kind_of(value)}.")


def as_array(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, Stream):
        return value.items()
    if hasattr(value, "notes"):
        raise ReqlQueryLogicError(INFINITE)
    raise ReqlQueryLogicError(f"Cannot convert {kind_of(value)} to SEQUENCE")


def as_seq(value: Any) -> list:
    """Items of an array or a stream (sequence operations accept both)."""
    return as_array(value)


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        expect(value, "STRING")
    return value


def as_num(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expect(value, "NUMBER")
    return value


def as_int(value: Any) -> int:
    """An integer, as the real server (whose numbers are doubles) accepts one."""
    number = as_num(value)
    if isinstance(number, int) and -(2**53) <= number <= 2**53:
        return number
    double = float(number)
    if -(2**53) <= double <= 2**53 and double.is_integer():
        return int(double)
    suffix = " (<-2^53)" if double < -(2**53) else " (>2^53)" if double > 2**53 else ""
    shown = str(int(double)) if double.is_integer() else repr(double)
    raise ReqlQueryLogicError(f"Number not an integer{suffix}: {shown}")


def as_obj(value: Any) -> dict:
    if isinstance(value, SingleSel):
        value = value.doc
    if not isinstance(value, dict):
        expect(value, "OBJECT")
    return value


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        expect(value, "BOOL")
    return value


def get_field(value: Any, name: str) -> Any:
    """``obj(name)``; a missing field is a non-existence error, as in ReQL."""
    from .reql_datum import pretty

    obj = as_obj(value) if not isinstance(value, dict) else value
    try:
        return obj[name]
    except KeyError:
        raise ReqlNonExistenceError(f"No attribute `{name}` in object:\n{pretty(obj)}") from None


def each_datum(ctx: Ctx, values: Iterable[Any]) -> list:
    return [ctx.datum(v) for v in values]
