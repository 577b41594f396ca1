"""Term handlers on datum values: strings, type_of and coerce_to, JSON, r.uuid and
r.binary."""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from typing import Any

from .reql_datum import (
    PTYPE,
    Literal,
    binary_bytes,
    check_json,
    make_binary,
    num,
    short,
    truthy,
    type_name,
)
from .reql_errors import ReqlQueryLogicError
from .reql_eval import Ctx, T, as_int, as_str, handler, kind_of

# RethinkDB derives r.uuid(string) as a version 5 UUID in this namespace.
UUID_NAMESPACE = uuid.UUID("91461c99-f89d-49d2-af96-d8e2e14e9b58")


# -- strings ------------------------------------------------------------------------


@handler(T.UPCASE, 1)
def upcase(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return as_str(args[0]).upper()


@handler(T.DOWNCASE, 1)
def downcase(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return as_str(args[0]).lower()


@handler(T.SPLIT, 1, 3)
def split(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    text = as_str(args[0])
    sep = args[1] if len(args) > 1 else None
    limit = as_int(args[2]) if len(args) > 2 else -1
    if sep is None:
        return text.split(None, limit)
    if as_str(sep) == "":
        chars = _graphemes(text)
        if 0 <= limit < len(chars):
            return [*chars[:limit], "".join(chars[limit:])]
        return chars
    return text.split(sep, limit)


def _graphemes(text: str) -> list[str]:
    """Characters as a reader sees them: combining marks stay with their base."""
    out: list[str] = []
    for char in text:
        if out and unicodedata.category(char) in ("Mn", "Mc", "Me"):
            out[-1] += char
        else:
            out.append(char)
    return out


@handler(T.MATCH, 2)
def match(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    text, pattern = as_str(args[0]), as_str(args[1])
    try:
        found = re.search(pattern, text)
    except re.error as exc:
        raise ReqlQueryLogicError(
            f"Error in regexp `{pattern}` (portion `{pattern}`): {exc}"
        ) from None
    if found is None:
        return None
    groups = [
        None
        if found.group(i) is None
        else {"str": found.group(i), "start": found.start(i), "end": found.end(i)}
        for i in range(1, (found.re.groups or 0) + 1)
    ]
    return {"str": found.group(0), "start": found.start(), "end": found.end(), "groups": groups}


# -- types --------------------------------------------------------------------------


@handler(T.TYPE_OF, 1)
def type_of(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return kind_of(args[0])


def _number_text(value: float) -> str:
    return str(num(value)) if isinstance(value, float) else str(value)


@handler(T.COERCE_TO, 2)
def coerce_to(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = as_str(ctx.datum(args[1])).upper()
    value = ctx.datum(args[0])
    source = type_name(value)
    if target == source or (target == "BINARY" and source == "PTYPE<BINARY>"):
        return value
    if target == "ARRAY":
        if isinstance(value, dict) and PTYPE not in value:
            return [[k, value[k]] for k in value]
    elif target == "OBJECT":
        if isinstance(value, list):
            out: dict[str, Any] = {}
            for pair in value:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ReqlQueryLogicError(
                        "Expected array of size 2, but got size "
                        f"{len(pair) if isinstance(pair, list) else 1}."
                    )
                out[as_str(pair[0])] = pair[1]
            return out
    elif target == "STRING":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _number_text(value)
        if source == "PTYPE<BINARY>":
            return binary_bytes(value).decode("utf-8", errors="replace")
        check_json(value)
        return short(value)
    elif target == "NUMBER":
        if isinstance(value, str):
            return _parse_number(value)
    elif target == "BOOL":
        return truthy(value)
    elif target == "BINARY" and isinstance(value, str):
        return make_binary(value.encode("utf-8"))
    shown = "BINARY" if source == "PTYPE<BINARY>" else source
    raise ReqlQueryLogicError(f"Cannot coerce {shown} to {target}.")


def _parse_number(text: str) -> Any:
    """``coerce_to('NUMBER')`` parses as C's strtod does (hex too), finite values only."""
    try:
        stripped = text.strip()
        unsigned = stripped.lstrip("+-")
        if unsigned[:2].lower() == "0x":
            number = float.fromhex(stripped)
        else:
            number = float(stripped)
    except ValueError:
        raise ReqlQueryLogicError(f"Could not coerce `{text}` to NUMBER.") from None
    if not math.isfinite(number):
        raise ReqlQueryLogicError(f"Non-finite number: {number!r}")
    return num(number)


@handler(T.JSON, 1)
def json_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    text = as_str(args[0])
    try:
        return num_floats(json.loads(text, object_pairs_hook=_json_object))
    except json.JSONDecodeError as exc:
        reason = _json_reason(text, exc)
        raise ReqlQueryLogicError(f'Failed to parse "{text}" as JSON: {reason}') from None


def _json_object(pairs: list[tuple[str, Any]]) -> Any:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ReqlQueryLogicError(f'Duplicate key "{key}" in JSON.')
        out[key] = value
    if out.get(PTYPE) == "LITERAL" and set(out) <= {PTYPE, "value"}:
        return Literal(out.get("value"), "value" in out)  # r.literal written as JSON
    return out


def num_floats(value: Any) -> Any:
    """Integral numbers parsed as floats are integers, as the real server sends them."""
    if isinstance(value, float):
        return num(value)
    if isinstance(value, list):
        return [num_floats(v) for v in value]
    if isinstance(value, dict):
        return {k: num_floats(v) for k, v in value.items()}
    if isinstance(value, Literal):
        return Literal(num_floats(value.value), value.present)
    return value


def _json_reason(text: str, exc: json.JSONDecodeError) -> str:
    """The parse error as RapidJSON (the real server's parser) words it."""
    message = exc.msg
    if message == "Expecting ',' delimiter":
        closing = "]" if _innermost_open(text[: exc.pos]) == "[" else "}"
        what = "an array element" if closing == "]" else "an object member"
        return f"Missing a comma or '{closing}' after {what}."
    reasons = {
        "Expecting value": "The document is empty." if not text.strip() else "Invalid value.",
        "Extra data": "The document root must not be followed by other values.",
        "Expecting property name enclosed in double quotes": "Missing a name for object member.",
        "Expecting ':' delimiter": "Missing a colon after a name of object member.",
        "Unterminated string starting at": "Missing a closing quotation mark in string.",
        "Invalid \\escape": "Invalid escape character in string.",
    }
    return reasons.get(message, message + ".")


def _innermost_open(text: str) -> str:
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


@handler(T.TO_JSON_STRING, 1)
def to_json_string(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    value = ctx.strict(args[0])
    check_json(value)
    return short(value)


@handler(T.UUID, 0, 1)
def uuid_(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    if args:
        return str(uuid.uuid5(UUID_NAMESPACE, as_str(args[0])))
    return str(uuid.uuid4())


@handler(T.BINARY, 1)
def binary(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    value = ctx.datum(args[0])
    if isinstance(value, dict) and value.get(PTYPE) == "BINARY":
        return value
    return make_binary(as_str(value).encode("utf-8"))
