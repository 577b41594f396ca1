"""Term handlers that compare and compute: eq/ne/lt/le/gt/ge and arithmetic
(add, sub, mul, div, mod, floor, ceil, round), on numbers, strings, arrays and times."""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

from .reql_datum import is_time, make_time, num, reql_eq, sort_key
from .reql_errors import ReqlQueryLogicError
from .reql_eval import Ctx, T, as_int, as_num, as_str, expect, handler

# -- comparison ---------------------------------------------------------------------


def _chain(args: list, ctx: Ctx, ok: Any) -> bool:
    keys = [sort_key(ctx.strict(a)) for a in args]
    return all(ok(a, b) for a, b in pairwise(keys))


@handler(T.EQ, 1, None)
def eq(ctx: Ctx, args: list, opts: dict, scope: dict) -> bool:
    if len(args) == 2:
        return reql_eq(ctx.strict(args[0]), ctx.strict(args[1]))
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
    values = [ctx.strict(a) for a in args]
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


# -- bits ---------------------------------------------------------------------------


def _bit_int(value: Any) -> int:
    number = as_int(value)
    if not -(2**53) <= number < 2**53:
        raise ReqlQueryLogicError(f"Integer too large: {number}")
    return number


def _register_bit_op(term_type: int, op: Any) -> None:
    @handler(term_type, 1, None)
    def bit_op(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
        values = [_bit_int(ctx.strict(a)) for a in args]
        result = values[0]
        for value in values[1:]:
            result = op(result, value)
        return result


_register_bit_op(T.BIT_AND, lambda a, b: a & b)
_register_bit_op(T.BIT_OR, lambda a, b: a | b)
_register_bit_op(T.BIT_XOR, lambda a, b: a ^ b)


@handler(T.BIT_NOT, 1)
def bit_not(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    return ~_bit_int(ctx.strict(args[0]))


def _shift(args: list, ctx: Ctx) -> tuple[int, int]:
    value, by = _bit_int(ctx.strict(args[0])), as_int(ctx.strict(args[1]))
    if by < 0:
        raise ReqlQueryLogicError("Cannot bit-shift by a negative value")
    return value, by


@handler(T.BIT_SAL, 2)
def bit_sal(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    value, by = _shift(args, ctx)
    if value == 0:
        return 0
    result = float(value) * 2.0**by if by < 1100 else math.copysign(math.inf, value)
    if not math.isfinite(result):
        raise ReqlQueryLogicError(f"Non-finite number: {result!r}")
    return num(result)


@handler(T.BIT_SAR, 2)
def bit_sar(ctx: Ctx, args: list, opts: dict, scope: dict) -> int:
    value, by = _shift(args, ctx)
    return value >> min(by, 63)
