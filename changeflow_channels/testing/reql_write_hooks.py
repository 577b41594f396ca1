"""Write hooks: ``table.set_write_hook(fn)``, ``get_write_hook()``, and applying the
hook to each document a write stores (unless ``ignore_write_hook=True``).

The hook gets ``({'primary_key': key, 'timestamp': now}, old, new)`` and returns
the document to store; it may not turn a deletion into a write or a write into a
deletion. Its errors are counted by the write as ``Error in write hook: ...``.
"""

from __future__ import annotations

import json
from typing import Any

from .reql_datum import binary_bytes
from .reql_determinism import deterministic
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError, ReqlServerError
from .reql_eval import PRECHECKS, Ctx, Func, T, handler, literal_type_error
from .reql_ops_select import as_table
from .reql_store import HOOK_BLOB_PREFIX, Table, hook_config


class HookRefused(Exception):
    """The hook refused one document; the message is the write's error for it."""


def apply_hook(ctx: Ctx, table: Table, old: Any, new: Any) -> Any:
    """The document the hook stores instead of ``new``; raises HookRefused."""
    if table.write_hook is None:
        return new
    pk = table.primary_key
    row = new if new is not None else old
    key = row.get(pk) if isinstance(row, dict) else None
    hook = ctx.ev(table.write_hook, {})
    try:
        modified = ctx.datum(hook({"primary_key": key, "timestamp": ctx.now}, old, new))
    except ReqlServerError as exc:
        raise HookRefused(f"Error in write hook: {exc.message}") from None
    if new is None and modified is not None:
        raise HookRefused("A write hook function must not turn a deletion into a replace/insert.")
    if new is not None and modified is None:
        raise HookRefused("A write hook function must not turn a replace/insert into a deletion.")
    return modified


def _hook_term(ctx: Ctx, term: Any) -> Any:
    """The FUNC term to store, from a function or a get_write_hook() binary."""
    if type(term) is list and term and term[0] == T.FUNC:
        return term
    value = ctx.datum(ctx.ev(term, {}))
    if isinstance(value, dict) and value.get("$reql_type$") == "BINARY":
        data = binary_bytes(value)
        if not data.startswith(HOOK_BLOB_PREFIX):
            raise ReqlQueryLogicError(
                "Cannot create a write hook except from a reql_write_hook_function"
                " returned from `get_write_hook`."
            )
        return json.loads(data[len(HOOK_BLOB_PREFIX) :])
    if value is None:
        return None
    raise literal_type_error(value, "FUNCTION")


NOT_DETERMINISTIC = (
    "Could not prove function deterministic.  Write hook functions must be deterministic."
)


def _precheck_hook(args: list, optargs: dict) -> None:
    function = args[1] if len(args) > 1 else None
    if type(function) is list and function[:1] == [T.FUNC] and not deterministic(function):
        raise ReqlQueryLogicError(NOT_DETERMINISTIC)


PRECHECKS[T.SET_WRITE_HOOK] = _precheck_hook


@handler(T.SET_WRITE_HOOK, 2, lazy=True)
def set_write_hook(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    table = as_table(ctx.ev(args[0], scope))
    if not isinstance(table, Table):
        raise ReqlOpFailedError("System tables have no write hooks.")
    existed = table.write_hook is not None
    term = _hook_term(ctx, args[1])
    if term is not None:
        if not deterministic(term):
            raise ReqlQueryLogicError(NOT_DETERMINISTIC)
        fn = ctx.ev(term, scope)
        if not isinstance(fn, Func) or len(fn.params) != 3:
            raise ReqlQueryLogicError("Write hook functions must expect 3 arguments.")
    ctx.store.change_config(table, lambda: setattr(table, "write_hook", term))
    if term is None:
        return {"deleted": 1}
    return {"replaced" if existed else "created": 1}


@handler(T.GET_WRITE_HOOK, 1)
def get_write_hook(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    table = as_table(args[0])
    return hook_config(table) if isinstance(table, Table) else None
