"""Term handlers on objects: field access (get_field, bracket), pluck/without,
has_fields/with_fields, merge and r.literal, keys/values and r.object.

Object operations also apply element-wise to sequences and to changefeeds
(``changes()['new_val']``, ``changes().pluck(...)``): see :func:`lift`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .reql_datum import PTYPE, Literal, pretty, type_name
from .reql_errors import ReqlNonExistenceError, ReqlQueryLogicError
from .reql_eval import (
    Ctx,
    Func,
    SingleSel,
    Stream,
    T,
    as_array,
    as_int,
    as_obj,
    as_str,
    handler,
)
from .reql_feeds import ChangeFeed

STRAY_LITERAL = (
    "Stray literal keyword found: literal is only legal inside of the object passed to "
    "merge or update and cannot nest inside other literals."
)


# -- applying a per-document operation to any receiver ---------------------------------


def lift(ctx: Ctx, target: Any, fn: Callable[[Any], Any], *, keep: bool = False) -> Any:
    """Apply ``fn`` to one object, or to each element of an array, stream or feed.

    With ``keep`` the operation filters (``fn`` returns True/False) and the result
    stays a selection of the same table; otherwise it maps. Feed steps are kept so
    that ``table.pluck(...).changes()`` still works.
    """
    if isinstance(target, ChangeFeed):
        target.post.append((lambda item: item if fn(item) else None) if keep else fn)
        return target
    if isinstance(target, Stream):
        step: Callable[[Any], Any] = fn
        if keep:

            def step_kept(doc: Any) -> Any:
                return doc if fn(doc) else None

            step = step_kept
        source = target

        def produce() -> list:
            out = []
            for doc in source.items():
                value = step(doc)
                if value is not None or not keep:
                    out.append(value)
            return out

        return Stream(
            produce,
            table=target.table,
            writable=keep and target.writable,
            steps=None if target.steps is None else [*target.steps, step],
            kind=_selection_kind(target.kind) if keep else "STREAM",
            # Still in index order: with a limit(n) before or after, a top-n changefeed.
            slice=target.slice,
            limit=target.limit,
        )
    if isinstance(target, list):
        if keep:
            return [doc for doc in target if fn(doc)]
        return [fn(doc) for doc in target]
    if isinstance(target, SingleSel):
        target = target.doc
    return fn(target)


def _selection_kind(kind: str) -> str:
    return "SELECTION<STREAM>" if kind in ("TABLE", "TABLE_SLICE") else kind


def field_of(value: Any, name: str, term: str = "get_field") -> Any:
    if not isinstance(value, dict) or PTYPE in value:
        as_object_of(value, term)
    try:
        return value[name]
    except KeyError:
        raise ReqlNonExistenceError(f"No attribute `{name}` in object:\n{pretty(value)}") from None


def _get_field(ctx: Ctx, target: Any, name: str, term: str = "get_field") -> Any:
    if isinstance(target, (list, Stream)):
        # On a sequence: the field of each element that has it.
        def pick() -> list:
            out = []
            for doc in as_array(target):
                if name in as_object_of(doc, term):
                    out.append(doc[name])
            return out

        return pick() if isinstance(target, list) else Stream(pick)
    if isinstance(target, ChangeFeed):
        # As on any stream: items without the field are left out (not objects: an error).
        return lift(
            ctx,
            target,
            lambda item: item.get(name) if isinstance(item, dict) else field_of(item, name),
        )
    if isinstance(target, SingleSel):
        target = target.doc
    return field_of(target, name, term)


def as_object_of(value: Any, term: str) -> dict:
    """An element a per-element operation works on: an object (a sequence of
    sequences is refused, as is any other datum)."""
    if isinstance(value, dict):
        if PTYPE in value:
            raise ReqlQueryLogicError(
                f"Cannot call `{term}` on objects of type `{type_name(value)}`."
            )
        return value
    if isinstance(value, list):
        raise ReqlQueryLogicError(f"Cannot perform {term} on a sequence of sequences.")
    # A null is a non-existence error (``default`` handles it), as on the real server.
    error = ReqlNonExistenceError if value is None else ReqlQueryLogicError
    raise error(f"Cannot perform {term} on a non-object non-sequence `{pretty(value)}`.")


@handler(T.GET_FIELD, 2)
def get_field(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    return _get_field(ctx, args[0], as_str(args[1]))


@handler(T.BRACKET, 2)
def bracket(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    target, key = args
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        from .reql_ops_seq import nth_of

        return nth_of(ctx, target, as_int(key))
    if not isinstance(key, str):
        raise ReqlQueryLogicError(
            f"Expected NUMBER or STRING as second argument to `bracket` but found {type_name(key)}."
        )
    return _get_field(ctx, target, key, "bracket")


# -- pluck / without / has_fields --------------------------------------------------------


def selector_tree(args: list) -> dict[str, Any]:
    """``'a', ['b', 'c'], {'d': ['e']}`` -> ``{'a': True, 'b': True, 'c': True, 'd': {'e': True}}``."""
    tree: dict[str, Any] = {}
    for arg in args:
        if isinstance(arg, str):
            tree[arg] = True
        elif isinstance(arg, list):
            tree.update(selector_tree(arg))
        elif isinstance(arg, dict):
            for key, sub in arg.items():
                tree[key] = True if sub is True else selector_tree([sub])
        else:
            raise ReqlQueryLogicError(f"Invalid path argument `{pretty(arg)}`.")
    return tree


def _is_plain(value: Any) -> bool:
    return isinstance(value, dict) and PTYPE not in value


def pluck(doc: Any, tree: dict[str, Any]) -> Any:
    obj = as_object_of(doc.doc if isinstance(doc, SingleSel) else doc, "pluck")
    out = {}
    for key, sub in tree.items():
        if key not in obj:
            continue
        value = obj[key]
        if sub is True:
            out[key] = value
        elif _is_plain(value):
            out[key] = pluck(value, sub)
        elif isinstance(value, list):
            out[key] = [pluck(v, sub) for v in value if _is_plain(v)]
    return out


def without(doc: Any, tree: dict[str, Any]) -> Any:
    out = dict(as_object_of(doc.doc if isinstance(doc, SingleSel) else doc, "without"))
    for key, sub in tree.items():
        if key not in out:
            continue
        if sub is True:
            del out[key]
        elif _is_plain(out[key]):
            out[key] = without(out[key], sub)
        elif isinstance(out[key], list):
            out[key] = [without(v, sub) if _is_plain(v) else v for v in out[key]]
    return out


def has_fields(doc: Any, tree: dict[str, Any], top: bool = False) -> bool:
    if not isinstance(doc, dict):
        if top:
            as_object_of(doc, "has_fields")
        return False
    for key, sub in tree.items():
        value = doc.get(key)
        if value is None:
            return False
        if sub is not True and not has_fields(value, sub):
            return False
    return True


@handler(T.PLUCK, 1, None)
def pluck_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    tree = selector_tree([ctx.datum(a) for a in args[1:]])
    return lift(ctx, args[0], lambda doc: pluck(doc, tree))


@handler(T.WITHOUT, 1, None)
def without_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    tree = selector_tree([ctx.datum(a) for a in args[1:]])
    return lift(ctx, args[0], lambda doc: without(doc, tree))


@handler(T.HAS_FIELDS, 1, None)
def has_fields_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    tree = selector_tree([ctx.datum(a) for a in args[1:]])
    target = args[0]
    if isinstance(target, (dict, SingleSel)):
        return has_fields(as_object_of(as_obj(target), "has_fields"), tree)
    return lift(ctx, target, lambda doc: has_fields(doc, tree, True), keep=True)


@handler(T.WITH_FIELDS, 1, None)
def with_fields(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    tree = selector_tree([ctx.datum(a) for a in args[1:]])
    if not isinstance(args[0], (list, Stream)) and not hasattr(args[0], "notes"):
        as_object_of(ctx.datum(args[0]), "has_fields")
    kept = lift(ctx, args[0], lambda doc: has_fields(doc, tree, True), keep=True)
    return lift(ctx, kept, lambda doc: pluck(doc, tree))


# -- merge ----------------------------------------------------------------------------


def strip_literals(value: Any) -> Any:
    if isinstance(value, Literal):
        return strip_literals(value.value)
    if isinstance(value, dict):
        return {k: strip_literals(v) for k, v in value.items() if not _empty_literal(v)}
    if isinstance(value, list):
        return [strip_literals(v) for v in value]
    return value


def _empty_literal(value: Any) -> bool:
    return isinstance(value, Literal) and not value.present


def deep_merge(left: Any, right: Any) -> Any:
    """``left.merge(right)``: nested objects merge, anything else replaces."""
    if isinstance(right, Literal):
        return strip_literals(right.value)
    if not (_is_plain(left) and _is_plain(right)):
        return strip_literals(right)
    out = dict(left)
    for key, value in right.items():
        if _empty_literal(value):
            out.pop(key, None)
        elif key in out:
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = strip_literals(value)
    return out


@handler(T.MERGE, 1, None)
def merge(ctx: Ctx, args: list, opts: dict, scope: dict) -> Any:
    others = args[1:]

    def apply(doc: Any) -> Any:
        result = _plain_object(ctx, doc, "merge") if isinstance(doc, dict) else as_obj(doc)
        for other in others:
            value = other(result) if isinstance(other, Func) else ctx.datum(other)
            if isinstance(value, Literal):
                raise ReqlQueryLogicError(STRAY_LITERAL)
            if isinstance(value, dict) and PTYPE in value:
                raise ReqlQueryLogicError(f"Cannot merge objects of type `{type_name(value)}`.")
            result = deep_merge(result, value)
        return result

    return lift(ctx, args[0], apply)


@handler(T.LITERAL, 0, 1)
def literal(ctx: Ctx, args: list, opts: dict, scope: dict) -> Literal:
    if args and _has_literal(args[0]):
        raise ReqlQueryLogicError(STRAY_LITERAL)
    return Literal(ctx.datum(args[0]), True) if args else Literal()


def _has_literal(value: Any) -> bool:
    if isinstance(value, Literal):
        return True
    if isinstance(value, dict):
        return any(_has_literal(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_literal(v) for v in value)
    return False


# -- objects --------------------------------------------------------------------------


@handler(T.KEYS, 1)
def keys(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    return sorted(_plain_object(ctx, args[0], "keys"))


def _plain_object(ctx: Ctx, value: Any, term: str) -> dict:
    value = ctx.datum(value)
    if not isinstance(value, dict) or PTYPE in value:
        raise ReqlQueryLogicError(f"Cannot call `{term}` on objects of type `{type_name(value)}`.")
    return value


@handler(T.VALUES, 1)
def values(ctx: Ctx, args: list, opts: dict, scope: dict) -> list:
    obj = _plain_object(ctx, args[0], "values")
    return [obj[k] for k in sorted(obj)]


@handler(T.OBJECT, 0, None)
def object_(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    if len(args) % 2:
        raise ReqlQueryLogicError(
            f"OBJECT expects an even number of arguments (but found {len(args)})."
        )
    values = [ctx.strict(a) for a in args]
    out: dict[str, Any] = {}
    for i in range(0, len(values), 2):
        key = as_str(values[i])
        if key in out:
            raise ReqlQueryLogicError(
                f'Duplicate key "{key}" in object.  (got {pretty(out[key])} and '
                f"{pretty(values[i + 1])} as values)"
            )
        out[key] = values[i + 1]
    return out
