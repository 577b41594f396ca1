"""The compile-time check of a query: terms the test server leaves out, arities,
``r.row`` outside one function, writes nested in stream operations, r.asc/r.desc
outside order_by/union, and the terms' own checks (``PRECHECKS``) — all before
anything runs, as the real server compiles a query before executing it."""

from __future__ import annotations

from typing import Any

from .reql_errors import ReqlCompileError, ReqlQueryLogicError
from .reql_eval import HANDLERS, PRECHECKS, TERM_NAMES, T, plural

__all__ = ["check", "unsupported"]


def _arity_text(low: int, high: int | None) -> str:
    if low == high:
        return plural(low, "argument")
    if high is None:
        return f"{low} or more arguments"
    return f"between {low} and {high} arguments"


_WRITES = frozenset(
    getattr(T, name)
    for name in (
        "UPDATE DELETE INSERT REPLACE DB_CREATE DB_DROP TABLE_CREATE TABLE_DROP WAIT "
        "RECONFIGURE REBALANCE SYNC GRANT SET_WRITE_HOOK GET_WRITE_HOOK INDEX_CREATE "
        "INDEX_DROP INDEX_WAIT INDEX_RENAME"
    ).split()
)
# Terms whose arguments after the first may not write (a write per element of a
# stream: the real server wants for_each there).
_NO_WRITES_INSIDE = frozenset(
    getattr(T, name)
    for name in (
        "REDUCE MAP FOLD FILTER CONCAT_MAP GROUP INNER_JOIN OUTER_JOIN EQ_JOIN UPDATE "
        "DELETE REPLACE INSERT COUNT SUM AVG MIN MAX"
    ).split()
)


def check(term: Any, depth: int = 0, writes: bool = True, parents: tuple = ()) -> None:
    """Reject unsupported terms, wrong arities, misplaced ``r.row`` and nested writes
    before anything runs. ``depth`` counts the one-argument functions around the term
    (``r.row`` is theirs: it is undefined outside of one, ambiguous inside two);
    ``writes`` is False inside a stream operation's function."""
    if type(term) is list:
        if not term or not isinstance(term[0], int):
            raise ReqlCompileError("Expected a term (a list starting with a term type).")
        ttype = term[0]
        if ttype == T.DATUM:
            return
        spec = HANDLERS.get(ttype)
        if spec is None:
            name = TERM_NAMES.get(ttype)
            if name is None:
                raise ReqlCompileError(f"Unrecognized TermType: {ttype}.")
            raise ReqlCompileError(unsupported(name))
        args = term[1] if len(term) > 1 else []
        optargs = term[2] if len(term) > 2 else {}
        if not isinstance(args, list) or not isinstance(optargs, dict):
            raise ReqlCompileError("Expected a list of arguments and an object of optargs.")
        spliced = any(type(a) is list and a and a[0] == T.ARGS for a in args)
        if spliced and ttype in (T.ORDER_BY, T.UNION):
            raise ReqlQueryLogicError(
                "r.args is not supported in an order_by or union command yet."
            )
        count = len(args)
        if not spliced and (
            count < spec.min_args or (spec.max_args is not None and count > spec.max_args)
        ):
            raise ReqlCompileError(
                f"Expected {_arity_text(spec.min_args, spec.max_args)} but found {count}."
            )
        if spec.optargs is not None:
            for name in optargs:
                if name not in spec.optargs:
                    raise ReqlCompileError(f"Unrecognized optional argument `{name}`.")
        precheck = PRECHECKS.get(ttype)
        if precheck is not None:
            precheck(args, optargs)
        if ttype in _WRITES and not writes:
            raise ReqlCompileError(
                "Cannot nest writes or meta ops in stream operations.  Use FOR_EACH instead."
            )
        if ttype in (T.ASC, T.DESC) and not (
            parents[:1] in ((T.ORDER_BY,), (T.UNION,)) or parents[:2] == (T.MAKE_ARRAY, T.UNION)
        ):
            raise ReqlCompileError(
                f"{TERM_NAMES[ttype]} may only be used as an argument to ORDER_BY or UNION."
            )
        if ttype == T.IMPLICIT_VAR and depth != 1:
            raise ReqlCompileError(
                "r.row is not defined in this context."
                if depth == 0
                else "Cannot use r.row in nested queries.  Use functions instead."
            )
        if ttype == T.FUNC and args:
            params = args[0]
            if type(params) is list and params and params[0] == T.MAKE_ARRAY:
                params = params[1] if len(params) > 1 else []
            if isinstance(params, list) and len(params) == 1:
                depth += 1
        inner = writes and ttype not in _NO_WRITES_INSIDE
        below = (ttype, *parents[:1])
        for i, arg in enumerate(args):
            check(arg, depth, writes if i == 0 else inner, below)
        for value in optargs.values():
            check(value, depth, inner, below)
    elif type(term) is dict:
        for value in term.values():
            check(value, depth, writes, (T.MAKE_OBJ,))


def unsupported(name: str) -> str:
    """The one error text for a term the test server leaves out (README lists them)."""
    return f"Term `{name}` is not supported by the ReQL test server."
