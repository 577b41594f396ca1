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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .reql_errors import ReqlQueryLogicError

PTYPE = "$reql_type$"

# RethinkDB orders values by type first: ARRAY < BOOL < NULL < NUMBER < OBJECT
# < PTYPE<...> (by pseudo-type name, then value) < STRING.
_RANK_ARRAY, _RANK_BOOL, _RANK_NULL, _RANK_NUMBER = 0, 1, 2, 3
_RANK_OBJECT, _RANK_PTYPE, _RANK_STRING = 4, 5, 6


class Bound:
    """``r.minval`` / ``r.maxval``: datums below and above every other one. They
    compare and index but cannot be sent or stored (no JSON form)."""

    __slots__ = ("key", "name")

    def __init__(self, key: tuple, name: str) -> None:
        self.key, self.name = key, name

    def __repr__(self) -> str:
        return f"r.{self.name.lower()}"


@dataclass
class Literal:
    """``r.literal(value)`` inside a merge/update: replace instead of merging. It is no
    datum: anywhere else it is a stray literal."""

    value: Any = None
    present: bool = False


# Sort keys below and above every datum key (ranks are 0..6).
MINVAL = Bound((-1,), "MINVAL")
MAXVAL = Bound((99,), "MAXVAL")


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
    if isinstance(value, Bound):
        return value.name
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
    if isinstance(value, Bound):
        return value.key
    raise TypeError(f"not a datum: {value!r}")


def check_json(value: Any) -> None:
    """Refuse what has no JSON form, as the real server does when it sends a value."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ReqlQueryLogicError(f"Non-finite number: {value!r}")
    elif isinstance(value, Bound):
        raise ReqlQueryLogicError(f"Cannot convert `{value!r}` to JSON.")
    elif isinstance(value, Literal):
        raise ReqlQueryLogicError(
            "Stray literal keyword found: literal is only legal inside of the object passed "
            "to merge or update and cannot nest inside other literals."
        )
    elif isinstance(value, list):
        for item in value:
            check_json(item)
    elif isinstance(value, dict):
        for item in value.values():
            check_json(item)


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
    """Integral doubles go back as integers, as the real server's JSON has them
    (but -0.0, which it writes as such)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        if value == 0 and math.copysign(1.0, value) < 0:
            return value
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
    data = "".join(str(value.get("data", "")).split()).rstrip("=")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def check_tz(tz: str) -> str:
    """A time zone as the real server writes it (``+HH:MM``), or its error."""
    if tz in ("-00", "-00:00"):
        raise ReqlQueryLogicError(f"`{tz}` is not a valid time offset.")
    if tz == "Z":
        return "+00:00"
    if tz[:1] not in ("-", "+"):
        raise ReqlQueryLogicError(f"Timezone `{tz}` does not start with `-` or `+`.")
    digits = tz[1:].replace(":", "", 1) if tz[3:4] == ":" else tz[1:]
    if len(digits) == 2:
        digits += "00"
    if len(digits) != 4 or not digits.isdigit():
        raise ReqlQueryLogicError(f"Garbage characters in timezone string `{tz}`.")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 24:
        raise ReqlQueryLogicError(f"Hours out of range in `{tz}`.")
    if minutes > 59:
        raise ReqlQueryLogicError(f"Minutes out of range in `{tz}`.")
    return f"{tz[0]}{digits[:2]}:{digits[2:]}"


def parse_tz(tz: str) -> timezone:
    """``+HH:MM`` / ``-HH:MM`` / ``Z`` to a ``datetime.timezone``."""
    text = check_tz(tz)
    sign = -1 if text[0] == "-" else 1
    return timezone(sign * timedelta(hours=int(text[1:3]), minutes=int(text[4:6])))


def sanitize_ptype(value: dict[str, Any]) -> dict[str, Any]:
    """A pseudo-type written in a query, checked and normalized as the real server
    does: a TIME keeps milliseconds and a ``+HH:MM`` zone, a BINARY valid base64."""
    ptype = value[PTYPE]
    if ptype == "TIME":
        return _sanitize_time(value)
    if ptype == "BINARY":
        for key in value:
            if key not in (PTYPE, "data"):
                raise ReqlQueryLogicError(f"Invalid binary pseudotype: illegal `{key}` key.")
        if "data" not in value:
            raise ReqlQueryLogicError("Invalid binary pseudotype: lacking `data` key.")
        _check_base64(value["data"])
    return value


def _sanitize_time(value: dict[str, Any]) -> dict[str, Any]:
    problem = ""
    for key, item in value.items():
        if key == "epoch_time" and not (isinstance(item, (int, float)) and item is not True):
            problem = f"field `epoch_time` must be a number (got `{short(item)}` of type {type_name(item)})"
        elif key == "timezone" and not isinstance(item, str):
            problem = (
                f"field `timezone` must be a string (got `{short(item)}` of type {type_name(item)})"
            )
        elif key not in (PTYPE, "epoch_time", "timezone"):
            problem = f"unrecognized field `{key}`"
        if problem:
            break
    if not problem and "epoch_time" not in value:
        problem = "no field `epoch_time`"
    elif not problem and "timezone" not in value:
        problem = "no field `timezone`"
    if problem:
        raise ReqlQueryLogicError(f"Invalid time object constructed ({problem}):\n{short(value)}")
    try:
        tz = check_tz(value["timezone"])
    except ReqlQueryLogicError:
        raise ReqlQueryLogicError(
            f"Invalid time object constructed (invalid timezone string "
            f"`{short(value['timezone'])}`):\n{short(value)}"
        ) from None
    return make_time(value["epoch_time"], tz)


_B64 = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _check_base64(data: Any) -> None:
    if not isinstance(data, str):
        raise ReqlQueryLogicError(f"Expected type STRING but found {type_name(data)}.")
    body, _, rest = data.partition("=")
    chars = [c for c in body if c not in "\r\n \t"]
    for char in chars:
        if char not in _B64:
            raise ReqlQueryLogicError(f"Invalid base64 character found: '{char}'.")
    if len(chars) % 4 == 1:
        raise ReqlQueryLogicError(
            "Invalid base64 length: 1 character remaining, cannot decode a full byte."
        )
    if rest.strip("=\r\n \t"):
        raise ReqlQueryLogicError("Invalid base64 format, data found after padding character '='.")


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


# The years this RethinkDB build's time library accepts (official builds: up to 10000).
MIN_YEAR, MAX_YEAR = 1400, 9999


def time_to_datetime(value: dict[str, Any]) -> datetime:
    tz = parse_tz(value.get("timezone") or "+00:00")
    try:
        moment = datetime.fromtimestamp(value["epoch_time"], tz)
    except (ValueError, OverflowError, OSError):
        moment = None
    if moment is None or not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ReqlQueryLogicError(
            f"Error in time logic: Year is out of valid range: {MIN_YEAR}..{MAX_YEAR}."
        )
    return moment


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


def pretty(value: Any, depth: int = 1, arrays: bool = False) -> str:
    """Print a datum as the real server does in error messages (cJSON style:
    one key per line, tab indentation, ``"key":<TAB>value``, keys sorted); with
    ``arrays``, one array element per line too (``info``'s ``value``)."""
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
        if arrays and value:
            inner = "\t" * depth
            items = [f"{inner}{pretty(item, depth + 1, arrays)}" for item in value]
            return "[\n" + ",\n".join(items) + "\n" + "\t" * (depth - 1) + "]"
        return "[" + ", ".join(pretty(item, depth + 1, arrays) for item in value) + "]"
    if not value:  # cJSON: "{}" alone, the brace on its own line when nested
        return "{}" if depth == 1 else "{\n" + "\t" * (depth - 1) + "}"
    inner = "\t" * depth
    lines = [
        f"{inner}{json.dumps(k, ensure_ascii=False)}:\t{pretty(value[k], depth + 1, arrays)}"
        for k in sorted(value)
    ]
    return "{\n" + ",\n".join(lines) + "\n" + "\t" * (depth - 1) + "}"


def short(value: Any) -> str:
    """Compact one-line rendering, used where the server prints ``value`` inline."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
