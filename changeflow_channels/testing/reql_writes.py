"""Write terms: insert, update, replace, delete.

Every change goes through ``Table.apply`` before the query returns, so all the
changes of one write are queued to the feeds atomically (there is no await in a
write). Results carry the six counters the real server always sends, plus
``generated_keys`` / ``first_error`` / ``changes`` only when they apply.
"""

from __future__ import annotations

import uuid
from typing import Any

from .reql_datum import PTYPE, pretty, reql_eq, sort_key, type_name
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError, ReqlRuntimeError
from .reql_eval import Ctx, Func, SingleSel, Stream, T, as_str, expect, handler
from .reql_ops_obj import deep_merge, strip_literals
from .reql_ops_select import as_table, check_pk
from .reql_store import Table, TableLike

COUNTERS = ("deleted", "errors", "inserted", "replaced", "skipped", "unchanged")


class WriteResult:
    """Accumulates the counters, first error and changes of one write query."""

    def __init__(self, return_changes: Any) -> None:
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.first_error: str | None = None
        self.generated: list[str] = []
        self.always = return_changes == "always"
        self.changes: list[dict] | None = [] if return_changes else None

    def error(self, message: str, old: Any = None, new: Any = None) -> None:
        self.counts["errors"] += 1
        if self.first_error is None:
            self.first_error = message
        if self.always and self.changes is not None:
            self.changes.append({"error": message, "new_val": new, "old_val": old})

    def change(self, counter: str, old: Any, new: Any) -> None:
        self.counts[counter] += 1
        if self.changes is not None and (counter != "unchanged" or self.always):
            if counter != "skipped":
                self.changes.append({"new_val": new, "old_val": old})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        if self.changes is not None:
            out["changes"] = self.changes
        if self.first_error is not None:
            out["first_error"] = self.first_error
        if self.generated:
            out["generated_keys"] = self.generated
        return dict(sorted(out.items()))


def writable(source: TableLike) -> Table:
    if not isinstance(source, Table):
        raise ReqlOpFailedError(
            f"Writing to the system table `{source.qualified}` is not supported by the "
            "ReQL test server."
        )
    return source


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and PTYPE not in value


def _commit(table: Table, result: WriteResult, old: Any, new: Any, key: tuple) -> None:
    """Classify and store one replacement of ``old`` by ``new`` (either may be None)."""
    if old is None and new is None:
        result.change("skipped", None, None)
        return
    if new is not None:
        if not _is_object(new):
            result.error(
                f"Inserted value must be an OBJECT (got {type_name(new)}):\n{pretty(new)}", old, old
            )
            return
        pk = table.primary_key
        if pk not in new:
            result.error(f"Inserted object must have primary key `{pk}`:\n{pretty(new)}", old, old)
            return
        if sort_key(new[pk]) != key:
            if old is None:
                result.error(
                    f"Primary key `{pk}` cannot be changed (`null` -> `{pretty(new)}`).", None, None
                )
            else:
                result.error(
                    f"Primary key `{pk}` cannot be changed (`{pretty(old)}` -> `{pretty(new)}`).",
                    old,
                    old,
                )
            return
    if old is None:
        result.change("inserted", None, new)
    elif new is None:
        result.change("deleted", old, None)
    elif reql_eq(old, new):
        result.change("unchanged", old, new)
        return
    else:
        result.change("replaced", old, new)
    table.apply(key, old, new)


# -- insert ---------------------------------------------------------------------------


@handler(T.INSERT, 2)
def insert(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    table = writable(as_table(args[0]))
    value = ctx.datum(args[1])
    if _is_object(value):
        docs = [value]
    elif isinstance(value, list):
        docs = value
    else:
        raise ReqlQueryLogicError(f"Cannot convert {type_name(value)} to SEQUENCE")
    conflict = opts.get("conflict", "error")
    if not isinstance(conflict, Func):
        conflict = as_str(conflict)
        if conflict not in ("error", "replace", "update"):
            raise ReqlQueryLogicError(
                f"Conflict option `{conflict}` unrecognized "
                '(options are "error", "replace" and "update").'
            )
    result = WriteResult(opts.get("return_changes", False))
    pk = table.primary_key
    for doc in docs:
        if not _is_object(doc):
            result.error(f"Expected type OBJECT but found {type_name(doc)}.")
            continue
        doc = strip_literals(doc)
        if pk not in doc:
            key_value = str(uuid.uuid4())
            doc = {**doc, pk: key_value}
            result.generated.append(key_value)
        try:
            check_pk(doc[pk])
        except ReqlQueryLogicError as exc:
            result.error(exc.message)
            continue
        key = sort_key(doc[pk])
        old = table.docs.get(key)
        if old is None:
            _commit(table, result, None, doc, key)
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
        _commit(table, result, old, new, key)
    return result.as_dict()


# -- update / replace / delete -----------------------------------------------------------


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
    expect(value, "SELECTION")
    raise AssertionError  # unreachable


def _modify(ctx: Ctx, args: list, opts: dict, merge: bool) -> dict:
    table, targets = _targets(args[0])
    fn = ctx.func(args[1])
    result = WriteResult(opts.get("return_changes", False))
    for key, old in targets:
        if old is None and merge:
            result.change("skipped", None, None)  # update of a missing document
            continue
        try:
            value = fn(old)
        except ReqlRuntimeError as exc:
            result.error(exc.message, old, old)
            continue
        if merge:
            if value is None:
                result.change("skipped", None, None)
                continue
            new = deep_merge(old, value)
        else:
            new = strip_literals(value)
        _commit(table, result, old, new, key)
    return result.as_dict()


@handler(T.UPDATE, 2)
def update(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return _modify(ctx, args, opts, merge=True)


@handler(T.REPLACE, 2)
def replace(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    return _modify(ctx, args, opts, merge=False)


@handler(T.DELETE, 1)
def delete(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    table, targets = _targets(args[0])
    result = WriteResult(opts.get("return_changes", False))
    for key, old in targets:
        _commit(table, result, old, None, key)
    return result.as_dict()
