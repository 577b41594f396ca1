"""ReQL datums for the test server: type names, ordering, equality, pseudo-types.

Datums are plain JSON values. Pseudo-types stay in their wire form
(``{"$reql_type$": "TIME", ...}``, ``{"$reql_type$": "BINARY", ...}``) both in
storage and in results: the driver converts them itself.
"""

from __future__ import annotations

import base64
import json
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from .reql_errors import ReqlQueryLogicError

PTYPE = "$reql_type$"

# RethinkDB orders values by type first: ARRAY < BOOL < NULL < NUMBER < OBJECT
# < PTYPE<...> (by pseudo-type name, then value) < STRING.
_RANK_ARRAY, _RANK_BOOL, _RANK_NULL, _RANK_NUMBER = 0, 1, 2, 3
_RANK_OBJECT, _RANK_PTYPE, _RANK_STRING = 4, 5, 6


def type_name(value: Any) -> str:
    """The name ``type_of`` and error messages use for a datum."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, (int, float)):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        ptype = value.get(PTYPE)
        return f"PTYPE<{ptype}>" if ptype is not None else "OBJECT"
    raise TypeError(f"not a datum: {value!r}")


def sort_key(value: Any) -> tuple:
    """A hashable key that orders and compares like RethinkDB does.

    Two datums are equal in ReQL exactly when their keys are equal (``1 == 1.0``,
    times compare by epoch whatever their time zone), so the key also serves to
    index documents by primary key and by secondary index value.
    """
    if isinstance(value, str):
        return (_RANK_STRING, value)
    if isinstance(value, bool):
        return (_RANK_BOOL, value)
    if isinstance(value, (int, float)):
        return (_RANK_NUMBER, value)
    if value is None:
        return (_RANK_NULL,)
    if isinstance(value, list):
        return (_RANK_ARRAY, tuple(sort_key(item) for item in value))
    if isinstance(value, dict):
        ptype = value.get(PTYPE)
        if ptype == "TIME":
            return (_RANK_PTYPE, "TIME", value.get("epoch_time", 0))
        if ptype == "BINARY":
            return (_RANK_PTYPE, "BINARY", binary_bytes(value))
        pairs = tuple((k, sort_key(value[k])) for k in sorted(value))
        if ptype is not None:
            return (_RANK_PTYPE, str(ptype), pairs)
        return (_RANK_OBJECT, pairs)
    raise TypeError(f"not a datum: {value!r}")


def reql_cmp(a: Any, b: Any) -> int:
    """-1, 0 or 1 as ``a`` sorts before, with or after ``b`` in ReQL order."""
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)


def reql_eq(a: Any, b: Any) -> bool:
    """ReQL equality (numbers by value, objects by content, times by epoch)."""
    if type(a) is str and type(b) is str:
        return a == b
    return sort_key(a) == sort_key(b)


def truthy(value: Any) -> bool:
    """Only ``false`` and ``null`` are false in ReQL."""
    return value is not None and value is not False


def num(value: float) -> int | float:
    """Integral doubles go back as integers, as the real server's JSON has them."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# -- pseudo-types -----------------------------------------------------------------


def make_time(epoch: float, tz: str = "+00:00") -> dict[str, Any]:
    """A TIME pseudo-type; RethinkDB keeps millisecond precision."""
    return {PTYPE: "TIME", "epoch_time": num(round(epoch, 3)), "timezone": tz}


def now_time() -> dict[str, Any]:
    return make_time(time.time())


def is_time(value: Any) -> bool:
    return isinstance(value, dict) and value.get(PTYPE) == "TIME"


def make_binary(data: bytes) -> dict[str, Any]:
    return {PTYPE: "BINARY", "data": base64.b64encode(data).decode("ascii")}


def binary_bytes(value: dict[str, Any]) -> bytes:
    return base64.b64decode(value.get("data", ""))


def parse_tz(tz: str) -> timezone:
    """``+HH:MM`` / ``-HH:MM`` / ``Z`` to a ``datetime.timezone``."""
    if tz in ("Z", "z"):
        return timezone.utc
    try:
        sign = -1 if tz[0] == "-" else 1
        hours, _, minutes = tz[1:].partition(":")
        return timezone(sign * timedelta(hours=int(hours), minutes=int(minutes or 0)))
    except (ValueError, IndexError):
        raise ReqlQueryLogicError(f"Invalid time zone format `{tz}`.") from None


def format_tz(tzinfo: Any) -> str:
    offset = tzinfo.utcoffset(None) if tzinfo is not None else timedelta(0)
    total = int(offset.total_seconds() // 60)
    sign = "-" if total < 0 else "+"
    total = abs(total)
    return f"{sign}{total // 60:02d}:{total % 60:02d}"


def parse_iso8601(text: str, default_tz: str | None = None) -> dict[str, Any]:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ReqlQueryLogicError(f"Invalid ISO 8601 date `{text}`.") from None
    if parsed.tzinfo is None:
        if default_tz is None:
            raise ReqlQueryLogicError(
                "ISO 8601 string has no time zone, and no default time zone was provided."
            )
        parsed = parsed.replace(tzinfo=parse_tz(default_tz))
    return make_time(parsed.timestamp(), format_tz(parsed.tzinfo))


def time_to_datetime(value: dict[str, Any]) -> datetime:
    tz = parse_tz(value.get("timezone") or "+00:00")
    return datetime.fromtimestamp(value["epoch_time"], tz)


def to_iso8601(value: dict[str, Any]) -> str:
    moment = time_to_datetime(value)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond // 1000:03d}"
    return text + format_tz(moment.tzinfo)


# -- printing (error messages) -------------------------------------------------------


def _print_number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return str(int(value))
    return repr(value)


def pretty(value: Any, depth: int = 1) -> str:
    """Print a datum as the real server does in error messages (cJSON style:
    one key per line, tab indentation, ``"key":<TAB>value``, keys sorted)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return _print_number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(pretty(item, depth + 1) for item in value) + "]"
    if not value:
        return "{\n" + "\t" * (depth - 1) + "}"
    inner = "\t" * depth
    lines = [
        f"{inner}{json.dumps(k, ensure_ascii=False)}:\t{pretty(value[k], depth + 1)}"
        for k in sorted(value)
    ]
    return "{\n" + ",\n".join(lines) + "\n" + "\t" * (depth - 1) + "}"


def short(value: Any) -> str:
    """Compact one-line rendering, used where the server prints ``value`` inline."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
