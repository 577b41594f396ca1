"""Term handlers on datums: literals, variables, control flow, comparison,
arithmetic, strings, types, and r.error / r.default / r.uuid / r.binary."""

from __future__ import annotations

import json
import math
import re
import uuid
from itertools import pairwise
from typing import Any

from .reql_datum import (
    PTYPE,
    binary_bytes,
    is_time,
    make_binary,
    make_time,
    num,
    reql_eq,
    short,
    sort_key,
    truthy,
    type_name,
)
from .reql_errors import (
    ReqlNonExistenceError,
    ReqlQueryLogicError,
    ReqlUserError,
)
from .reql_eval import (
    IMPLICIT,
    Ctx,
    Func,
    Order,
    T,
    as_int,
    as_num,
    as_str,
    expect,
    handler,
    kind_of,
)

# RethinkDB derives r.uuid(string) as a version 5 UUID in this namespace.
UUID_NAMESPACE = uuid.UUID("91461c99-f89d-49d2-af96-d8e2e14e9b58")


# -- literals, variables, functions --------------------------------------------------


@handler(T.DATUM, 1, lazy=True)
def datum(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    return args[0]


@handler(T.MAKE_ARRAY, 0, None)
def make_array(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return [ctx.datum(a) for a in args]


@handler(T.MAKE_OBJ, 0, lazy=True)
def make_obj(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    return {k: ctx.datum(ctx.ev(v, scope)) for k, v in optargs.items()}


@handler(T.VAR, 1, lazy=True)
def var(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    try:
        return scope[args[0]]
    except KeyError:
        raise ReqlQueryLogicError(f"Variable name not found: var_{args[0]}.") from None


@handler(T.IMPLICIT_VAR, 0, lazy=True)
def implicit_var(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    try:
        return scope[IMPLICIT]
    except KeyError:
        raise ReqlQueryLogicError("r.row is not defined here.") from None


@handler(T.FUNC, 2, lazy=True)
def func(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Func:
    params = args[0][1] if isinstance(args[0], list) and args[0][0] == T.MAKE_ARRAY else args[0]
    return Func(ctx, list(params), args[1], scope)


@handler(T.ARGS, 1)
def args_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    # Spliced into the enclosing call by Ctx.ev_args; alone it is just its array.
    return ctx.datum(args[0])


@handler(T.FUNCALL, 1, None)
def funcall(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    fn = args[0]
    if not isinstance(fn, Func):
        expect(fn, "FUNCTION")
    return fn(*args[1:])


# -- control flow -------------------------------------------------------------------


@handler(T.BRANCH, 3, None, lazy=True)
def branch(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    if len(args) % 2 == 0:
        raise ReqlQueryLogicError("Cannot call `branch` term with an even number of arguments.")
    for i in range(0, len(args) - 1, 2):
        if truthy(ctx.datum(ctx.ev(args[i], scope))):
            return ctx.ev(args[i + 1], scope)
    return ctx.ev(args[-1], scope)


@handler(T.AND, 0, None, lazy=True)
def and_(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    value: Any = True
    for arg in args:
        value = ctx.datum(ctx.ev(arg, scope))
        if not truthy(value):
            return value
    return value


@handler(T.OR, 0, None, lazy=True)
def or_(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    value: Any = False
    for arg in args:
        value = ctx.datum(ctx.ev(arg, scope))
        if truthy(value):
            return value
    return value


@handler(T.NOT, 1)
def not_(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return not truthy(ctx.datum(args[0]))


@handler(T.ERROR, 0, 1)
def error(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    raise ReqlUserError(as_str(args[0]) if args else "Empty ERROR term outside a default block.")


@handler(T.DEFAULT, 2, lazy=True)
def default(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    try:
        value = ctx.datum(ctx.ev(args[0], scope))
    except ReqlNonExistenceError as exc:
        fallback = ctx.ev(args[1], scope)
        return fallback(exc.message) if isinstance(fallback, Func) else fallback
    if value is None:
        fallback = ctx.ev(args[1], scope)
        return fallback(None) if isinstance(fallback, Func) else fallback
    return value


# -- comparison ---------------------------------------------------------------------


def _chain(args: list, ctx: Ctx, ok: Any) -> bool:
    keys = [sort_key(ctx.datum(a)) for a in args]
    return all(ok(a, b) for a, b in pairwise(keys))


@handler(T.EQ, 1, None)
def eq(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    if len(args) == 2:
        return reql_eq(ctx.datum(args[0]), ctx.datum(args[1]))
    return _chain(args, ctx, lambda a, b: a == b)


@handler(T.NE, 1, None)
def ne(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return not eq(ctx, args, opts, scope)


@handler(T.LT, 1, None)
def lt(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return _chain(args, ctx, lambda a, b: a < b)


@handler(T.LE, 1, None)
def le(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return _chain(args, ctx, lambda a, b: a <= b)


@handler(T.GT, 1, None)
def gt(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return _chain(args, ctx, lambda a, b: a > b)


@handler(T.GE, 1, None)
def ge(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    return _chain(args, ctx, lambda a, b: a >= b)


# -- arithmetic ---------------------------------------------------------------------


def _add2(a: Any, b: Any) -> Any:
    if is_time(a):
        return make_time(a["epoch_time"] + as_num(b), a["timezone"])
    if isinstance(a, str):
        return a + as_str(b)
    if isinstance(a, list):
        if not isinstance(b, list):
            expect(b, "ARRAY")
        return a + b
    return num(as_num(a) + as_num(b))


def _sub2(a: Any, b: Any) -> Any:
    if is_time(a):
        if is_time(b):
            return num(round(a["epoch_time"] - b["epoch_time"], 3))
        return make_time(a["epoch_time"] - as_num(b), a["timezone"])
    return num(as_num(a) - as_num(b))


def _mul2(a: Any, b: Any) -> Any:
    if isinstance(a, list):
        return a * as_int(b)
    if isinstance(b, list):
        return b * as_int(a)
    return num(as_num(a) * as_num(b))


def _div2(a: Any, b: Any) -> Any:
    if as_num(b) == 0:
        raise ReqlQueryLogicError("Cannot divide by zero.")
    return num(as_num(a) / b)


def _fold(ctx: Ctx, args: list, op: Any) -> Any:
    values = [ctx.datum(a) for a in args]
    result = values[0]
    if len(values) == 1 and not is_time(result) and not isinstance(result, (str, list)):
        as_num(result)
    for value in values[1:]:
        result = op(result, value)
    return result


@handler(T.ADD, 1, None)
def add(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _fold(ctx, args, _add2)


@handler(T.SUB, 1, None)
def sub(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _fold(ctx, args, _sub2)


@handler(T.MUL, 1, None)
def mul(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _fold(ctx, args, _mul2)


@handler(T.DIV, 1, None)
def div(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _fold(ctx, args, _div2)


@handler(T.MOD, 2)
def mod(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    a, b = as_int(ctx.datum(args[0])), as_int(ctx.datum(args[1]))
    if b == 0:
        raise ReqlQueryLogicError("Cannot take a number modulo 0.")
    return int(math.fmod(a, b))  # the sign follows the dividend, as in C


@handler(T.FLOOR, 1)
def floor(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    return math.floor(as_num(ctx.datum(args[0])))


@handler(T.CEIL, 1)
def ceil(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    return math.ceil(as_num(ctx.datum(args[0])))


@handler(T.ROUND, 1)
def round_(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    value = as_num(ctx.datum(args[0]))
    return math.floor(abs(value) + 0.5) * (1 if value >= 0 else -1)  # half away from 0


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


@handler(T.ASC, 1)
def asc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(False, args[0])


@handler(T.DESC, 1)
def desc(ctx: Ctx, args: list, opts: dict, scope: dict) -> Order:
    return Order(True, args[0])
