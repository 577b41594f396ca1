"""Write terms: insert, update, replace, delete.

Every change goes through ``Table.apply`` before the query returns, so all the
changes of one write are queued to the feeds atomically (there is no await in a
write). ``update``'s argument is evaluated for each document, so an error there
(``update({'x': r.error('a')})``) is counted for that document, as on the real
server; an atomic ``update``/``replace`` refuses a non-deterministic argument.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from .reql_config_writes import (
    delete_config_rows,
    insert_config_rows,
    is_config,
    is_table_config,
    write_table_config,
)
from .reql_datum import Literal, pretty, sort_key, truthy, type_name
from .reql_determinism import deterministic
from .reql_errors import ReqlQueryLogicError, ReqlRuntimeError
from .reql_eval import (
    PRECHECKS,
    Ctx,
    Func,
    SingleSel,
    Stream,
    T,
    as_str,
    handler,
    literal_type_error,
)
from .reql_ops_obj import STRAY_LITERAL, deep_merge, strip_literals
from .reql_ops_select import as_table
from .reql_store import SystemTable, Table
from .reql_write_hooks import HookRefused, apply_hook
from .reql_write_result import (
    WRITE_OPTARGS,
    WriteOptions,
    WriteResult,
    commit,
    is_object,
    key_error,
    system_refusal,
    writable,
)


def _store(
    ctx: Ctx, table: Table, result: WriteResult, opts: WriteOptions, old: Any, new: Any, key: tuple
) -> None:
    """Run the table's write hook on ``new`` (unless ignored), then commit."""
    if not opts.ignore_hook and table.write_hook is not None and (old, new) != (None, None):
        try:
            new = apply_hook(ctx, table, old, new)
        except HookRefused as refused:
            result.error(str(refused), old, old)
            return
    commit(table, result, old, new, key)


# -- insert ---------------------------------------------------------------------------


def _conflict(opts: dict) -> str | Func:
    conflict = opts.get("conflict", "error")
    if isinstance(conflict, Func):
        if not deterministic(conflict.body):
            raise ReqlQueryLogicError(
                "The conflict function passed to `insert` must be deterministic."
            )
        if conflict.params and len(conflict.params) != 3:
            raise ReqlQueryLogicError(
                "The conflict function passed to `insert` should expect 3 arguments."
            )
        return conflict
    conflict = as_str(conflict)
    if conflict not in ("error", "replace", "update"):
        raise ReqlQueryLogicError(
            f"Conflict option `{conflict}` unrecognized "
            '(options are "error", "replace" and "update").'
        )
    return conflict


@handler(T.INSERT, 2, optargs=(*WRITE_OPTARGS, "conflict"))
def insert(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    source = as_table(args[0])
    refusal = system_refusal(source)
    table = source if refusal is not None or is_config(source) else writable(source)
    options = WriteOptions(opts)
    conflict = _conflict(opts)
    value = ctx.datum(args[1])
    if is_object(value):
        docs = [value]
    elif isinstance(value, list):
        docs = value
    else:
        raise ReqlQueryLogicError(f"Cannot convert {type_name(value)} to SEQUENCE")
    result = WriteResult(options.return_changes, ctx.array_limit())
    if refusal is not None:
        return _refused(result, refusal, len(docs))
    if isinstance(source, SystemTable) and is_config(source):
        return insert_config_rows(ctx.store, source, docs, result)
    assert isinstance(table, Table)
    pk = table.primary_key
    for doc in docs:
        if not is_object(doc):
            result.error(f"Expected type OBJECT but found {type_name(doc)}.")
            continue
        doc = strip_literals(doc)
        if pk not in doc:
            key_value = str(uuid.uuid4())
            doc = {**doc, pk: key_value}
            result.generated.append(key_value)
        problem = key_error(doc[pk])
        if problem is not None:
            result.error(problem, early=True)  # keys are checked before anything is written
            continue
        key = sort_key(doc[pk])
        old = table.docs.get(key)
        if old is None:
            _store(ctx, table, result, options, None, doc, key)
            continue
        if isinstance(conflict, Func):
            try:
                new = conflict(doc[pk], old, doc)
            except ReqlRuntimeError as exc:
                result.error(exc.message, old, old)
                continue
        elif conflict == "replace":
            new = doc
        elif conflict == "update":
            new = deep_merge(old, doc)
        else:
            result.error(f"Duplicate primary key `{pk}`:\n{pretty(old)}\n{pretty(doc)}", old, old)
            continue
        _store(ctx, table, result, options, old, new, key)
    return result.as_dict()


# -- update / replace / delete -----------------------------------------------------------


def _refused(result: WriteResult, message: str, count: int) -> dict:
    for _ in range(count):
        result.error(message)
    return result.as_dict()


def _count(target: Any) -> int:
    """How many documents a write to a system table was given (a get: one)."""
    return len(target.items()) if isinstance(target, Stream) else 1


def _nothing_on_system_table(target: Any) -> bool:
    """A write selecting no row of a system table: nothing to refuse, nothing done."""
    if not isinstance(getattr(target, "table", None), SystemTable):
        return False
    if isinstance(target, SingleSel):
        return target.doc is None
    return isinstance(target, Stream) and not target.items()


def _targets(value: Any) -> tuple[Table, list[tuple[tuple, Any]]]:
    """The table and (primary key, current document or None) pairs a write applies to."""
    if isinstance(value, SingleSel):
        table = writable(value.table)
        key = sort_key(value.key)
        return table, [(key, table.docs.get(key))]
    if isinstance(value, Stream) and value.writable and value.table is not None:
        table = writable(value.table)
        pk = table.primary_key
        keys = dict.fromkeys(sort_key(doc[pk]) for doc in value.items())
        return table, [(key, table.docs.get(key)) for key in keys]
    raise literal_type_error(value, "SELECTION")


def _per_document(ctx: Ctx, term: Any, scope: dict, *, lazy: bool) -> Callable[[Any], Any]:
    """The write's argument as a function of the old document: a function, or a
    value evaluated for each document (``lazy``, update) or once (replace)."""
    if type(term) is list and term and term[0] == T.FUNC:
        return ctx.func(ctx.ev(term, scope))
    if lazy:
        return lambda _doc: ctx.datum(ctx.ev(term, scope))
    value = ctx.ev(term, scope)
    if isinstance(value, Literal):
        raise ReqlQueryLogicError(STRAY_LITERAL)
    return ctx.func(value)


def _modify(ctx: Ctx, args: list, optargs: dict, scope: dict, merge: bool) -> dict:
    opts = {k: ctx.opt(ctx.ev(v, scope)) for k, v in optargs.items()}
    non_atomic = truthy(opts["non_atomic"]) if "non_atomic" in opts else False
    options = WriteOptions(opts)
    if not non_atomic and not deterministic(args[1]):
        raise ReqlQueryLogicError(NOT_DETERMINISTIC)
    fn = _per_document(ctx, args[1], scope, lazy=merge)
    target = ctx.ev(args[0], scope)
    result = WriteResult(options.return_changes, ctx.array_limit())
    if isinstance(target, (SingleSel, Stream)) and is_table_config(target.table):
        keys = [target.key] if isinstance(target, SingleSel) else [d["id"] for d in target.items()]

        def change(old: dict) -> Any:
            value = fn(old)
            return (old if value is None else deep_merge(old, value)) if merge else value

        return write_table_config(ctx.store, keys, change, result)
    refusal = system_refusal(getattr(target, "table", None))
    if refusal is not None:
        return _refused(result, refusal, _count(target))
    if _nothing_on_system_table(target):
        return result.as_dict()
    table, targets = _targets(target)
    for key, old in targets:
        if old is None and merge:
            result.change("skipped", None, None)  # update of a missing document
            continue
        try:
            value = fn(old)
            if isinstance(value, Literal):  # only inside the object of a merge/update
                raise ReqlQueryLogicError(STRAY_LITERAL)
            if merge:
                new = old if value is None else deep_merge(old, value)
            else:
                new = strip_literals(value)
        except ReqlRuntimeError as exc:
            result.error(exc.message, old, old)
            continue
        _store(ctx, table, result, options, old, new, key)
    return result.as_dict()


NOT_DETERMINISTIC = (
    "Could not prove argument deterministic.  Maybe you want to use the non_atomic flag?"
)


def _precheck_atomic(args: list, optargs: dict) -> None:
    """Before compiling the argument (whose terms may not even be supported here):
    an atomic write refuses a non-deterministic one."""
    if optargs.get("non_atomic", False) is False and len(args) > 1:
        if not deterministic(args[1]):
            raise ReqlQueryLogicError(NOT_DETERMINISTIC)


PRECHECKS[T.UPDATE] = PRECHECKS[T.REPLACE] = _precheck_atomic


@handler(T.UPDATE, 2, lazy=True, optargs=(*WRITE_OPTARGS, "non_atomic"))
def update(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    return _modify(ctx, args, optargs, scope, merge=True)


@handler(T.REPLACE, 2, lazy=True, optargs=(*WRITE_OPTARGS, "non_atomic"))
def replace(ctx: Ctx, args: list, optargs: dict, scope: dict) -> dict:
    return _modify(ctx, args, optargs, scope, merge=False)


@handler(T.DELETE, 1, optargs=WRITE_OPTARGS)
def delete(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    options = WriteOptions(opts)
    result = WriteResult(options.return_changes, ctx.array_limit())
    refusal = system_refusal(getattr(args[0], "table", None), deleting=True)
    if refusal is not None:
        return _refused(result, refusal, _count(args[0]))
    source = getattr(args[0], "table", None)
    if isinstance(source, SystemTable) and is_config(source):
        rows = [args[0].doc] if isinstance(args[0], SingleSel) else args[0].items()
        return delete_config_rows(ctx.store, source, [r for r in rows if r is not None], result)
    if _nothing_on_system_table(args[0]):
        return result.as_dict()
    table, targets = _targets(args[0])
    for key, old in targets:
        _store(ctx, table, result, options, old, None, key)
    return result.as_dict()
