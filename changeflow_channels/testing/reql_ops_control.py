"""Term handlers for the language itself: literals, variables, functions and calls,
control flow (branch, and, or, not), r.error and r.default."""

from __future__ import annotations

from typing import Any

from .reql_datum import truthy
from .reql_errors import (
    ReqlEmptyUserError,
    ReqlNonExistenceError,
    ReqlQueryLogicError,
    ReqlUserError,
)
from .reql_eval import IMPLICIT, Ctx, Func, Order, T, as_str, handler, raw_type

# -- literals, variables, functions --------------------------------------------------


@handler(T.DATUM, 1, lazy=True)
def datum(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    return args[0]


@handler(T.MAKE_ARRAY, 0, None)
def make_array(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    # Functions and r.asc/r.desc may stand in an array of orderings (union's interleave).
    return [a if isinstance(a, (Func, Order)) else ctx.strict(a) for a in args]


@handler(T.MAKE_OBJ, 0, lazy=True)
def make_obj(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    return {k: ctx.strict(ctx.ev(v, scope)) for k, v in optargs.items()}


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
        return fn  # r.do(value): the value itself, as a constant function gives it
    return fn.call(*args[1:])


# -- control flow -------------------------------------------------------------------


@handler(T.BRANCH, 3, None, lazy=True)
def branch(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    if len(args) % 2 == 0:
        raise ReqlQueryLogicError("Cannot call `branch` term with an even number of arguments.")
    for i in range(0, len(args) - 1, 2):
        if truthy(ctx.strict(ctx.ev(args[i], scope))):
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
    if not args:
        raise ReqlEmptyUserError()
    raise ReqlUserError(as_str(args[0]))


@handler(T.DEFAULT, 2, lazy=True)
def default(ctx: Ctx, args: list, optargs: dict, scope: dict) -> Any:
    error: ReqlNonExistenceError | None = None
    try:
        value = ctx.ev(args[0], scope)
        if raw_type(value) not in ("DATUM", "SINGLE_SELECTION"):
            return value
        value = ctx.datum(value)
        if value is not None:
            return value
        reason = None
    except ReqlNonExistenceError as exc:
        error, reason = exc, exc.message
    return fallback(ctx, args[1], scope, reason, error)


def fallback(
    ctx: Ctx, term: Any, scope: dict, reason: Any, error: ReqlNonExistenceError | None
) -> Any:
    """A default's value (called with the error's message, or null); an empty
    ``r.error()`` there rethrows the error it stands in for (null: returns null)."""
    try:
        value = ctx.ev(term, scope)
        return value.call(reason) if isinstance(value, Func) else value
    except ReqlEmptyUserError:
        if error is not None:
            raise error from None
        return None
