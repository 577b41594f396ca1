"""r.random and sample: random numbers and random picks, checked as the real server
checks them (these terms are non-deterministic: no changefeed after them)."""

from __future__ import annotations

import random
import sys
from typing import Any

from .reql_datum import num
from .reql_errors import ReqlQueryLogicError
from .reql_eval import Ctx, Stream, T, as_array, as_bool, as_int, as_num, handler
from .reql_ops_seq import seq_target

_rng = random.SystemRandom()


def _int_bound(value: float, which: str) -> int:
    if value.is_integer() and -(2**53) <= value <= 2**53:
        return int(value)
    raise ReqlQueryLogicError(
        f"{which} bound ({value!r}) could not be safely converted to an integer."
    )


@handler(T.RANDOM, 0, 2)
def random_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    bounds = [float(as_num(ctx.strict(a))) for a in args]
    use_float = as_bool(opts["float"]) if "float" in opts else not bounds
    if use_float:
        lower, upper = (
            (0.0, 1.0) if not bounds else (0.0, bounds[0]) if len(bounds) == 1 else bounds
        )
        scaled = (lower > 0) != (upper > 0) and abs(lower) > sys.float_info.max / 2 - abs(upper)
        if scaled:
            lower, upper = lower / 4, upper / 4
        result = lower + _rng.random() * (upper - lower)
        if (result >= upper) if upper > lower else (result <= upper):
            result = lower
        return num(result * 4 if scaled else result)
    if not bounds:
        raise ReqlQueryLogicError("Generating a random integer requires one or two bounds.")
    if len(bounds) == 1:
        low, high = 0, _int_bound(bounds[0], "Upper")
    else:
        low, high = _int_bound(bounds[0], "Lower"), _int_bound(bounds[1], "Upper")
    if low >= high:
        raise ReqlQueryLogicError(f"Lower bound ({low}) is not less than upper bound ({high}).")
    return _rng.randrange(low, high)


@handler(T.SAMPLE, 2)
def sample(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    count = as_int(ctx.strict(args[1]))
    if count < 0:
        raise ReqlQueryLogicError(f"Number of items to sample must be non-negative, got `{count}`.")
    target = seq_target(args[0])
    items = as_array(target)
    picked = _rng.sample(items, min(count, len(items)))
    return picked if isinstance(target, list) else Stream.of(picked)
