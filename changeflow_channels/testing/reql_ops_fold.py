"""Term handlers that run a function over a sequence in order: for_each (a write per
element, the write results merged) and fold (an accumulator, maybe emitting)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .reql_datum import pretty, type_name
from .reql_errors import ReqlQueryLogicError, ReqlServerError
from .reql_eval import Ctx, Func, Stream, T, as_array, expect, handler
from .reql_ops_lazy import infinite, is_infinite
from .reql_ops_seq import seq_target

FOR_EACH_FAILED = "FOR_EACH expects one or more basic write queries."


def _merge_stat(left: Any, right: Any) -> Any:
    """Two write results' values for one key, merged as the real server does."""
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return left + right
    if isinstance(left, list) and isinstance(right, list):
        return left + right
    if isinstance(left, str) and isinstance(right, str):
        return left  # first_error: the first one stays
    raise ReqlQueryLogicError(
        f"{FOR_EACH_FAILED}  Cannot merge statistics `{pretty(left)}` (type "
        f"{type_name(left)}) and `{pretty(right)}` (type {type_name(right)})."
    )


def merge_stats(stats: dict, result: dict) -> dict:
    out = dict(stats)
    for key, value in result.items():
        out[key] = _merge_stat(out[key], value) if key in out else value
    return out


@handler(T.FOR_EACH, 2, lazy=True)
def for_each(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    rows = as_array(seq_target(ctx.ev(args[0], scope)))
    body = ctx.ev(args[1], scope)
    stats: dict = {}
    for row in rows:
        value = body.call(row) if isinstance(body, Func) else body
        try:
            result = ctx.strict(value)
        except ReqlServerError:
            raise ReqlQueryLogicError(FOR_EACH_FAILED) from None
        if isinstance(result, dict):
            stats = merge_stats(stats, result)
            continue
        if not isinstance(result, list):
            raise ReqlQueryLogicError(
                f"{FOR_EACH_FAILED}  Expected type ARRAY but found {type_name(result)}."
            )
        for one in result:
            if not isinstance(one, dict):
                raise ReqlQueryLogicError(
                    f"{FOR_EACH_FAILED}  Expected type OBJECT but found {type_name(one)}."
                )
            stats = merge_stats(stats, one)
    return stats


@handler(T.FOLD, 3)
def fold(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target = seq_target(args[0])
    acc = ctx.strict(args[1])
    step = args[2]
    if not isinstance(step, Func):
        expect(step, "FUNCTION")
    if len(step.params) not in (0, 2):
        raise ReqlQueryLogicError(
            "The accumulator function passed to `fold` should expect 2 arguments"
        )
    emit = opts.get("emit")
    final_emit = opts.get("final_emit")
    for fn in (emit, final_emit):
        if fn is not None and not isinstance(fn, Func):
            expect(fn, "FUNCTION")
    if emit is not None and is_infinite(target):
        return infinite(lambda: _emitting(ctx, target.lazy(), acc, step, emit))
    out: list = []
    for row in as_array(target):
        old, acc = acc, ctx.strict(step.call(acc, row))
        if emit is not None:
            out.extend(_emitted(ctx, emit.call(old, row, acc)))
    if emit is None:
        return final_emit(acc) if final_emit is not None else acc
    if final_emit is not None:
        out.extend(_emitted(ctx, final_emit.call(acc)))
    return out if isinstance(target, list) else Stream.of(out)


def _emitting(ctx: Ctx, rows: Iterator[Any], acc: Any, step: Func, emit: Func) -> Iterator[Any]:
    for row in rows:
        old, acc = acc, ctx.strict(step.call(acc, row))
        yield from _emitted(ctx, emit.call(old, row, acc))


def _emitted(ctx: Ctx, value: Any) -> list:
    value = ctx.strict(value)
    if not isinstance(value, list):
        expect(value, "ARRAY")
    return value
