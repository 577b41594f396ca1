"""Term handlers on datum values: strings, type_of and coerce_to, JSON, r.uuid and
r.binary."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from .reql_datum import PTYPE, binary_bytes, make_binary, num, short, truthy, type_name
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
        return list(text)
    return text.split(sep, limit)


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
        return short(value)
    elif target == "NUMBER":
        if isinstance(value, str):
            try:
                return num(float(value))
            except ValueError:
                raise ReqlQueryLogicError(f"Could not coerce `{value}` to NUMBER.") from None
    elif target == "BOOL":
        return truthy(value)
    elif target == "BINARY" and isinstance(value, str):
        return make_binary(value.encode("utf-8"))
    raise ReqlQueryLogicError(f"Cannot coerce {source} to {target}.")


@handler(T.JSON, 1)
def json_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    try:
        return json.loads(as_str(args[0]))
    except ValueError as exc:
        raise ReqlQueryLogicError(f'Failed to parse "{args[0]}" as JSON: {exc}') from None


@handler(T.TO_JSON_STRING, 1)
def to_json_string(ctx: Ctx, args: list, opts: dict, scope: dict) -> str:
    return short(ctx.datum(args[0]))


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
