"""The ReQL evaluator core: query context, runtime values, term registry, arity check.

A term is ``[TYPE, [args...], {optargs}]``; objects are plain JSON dicts whose
values are terms; anything else is a datum. Term handlers live in the
``reql_ops_*`` modules and register themselves here with :func:`handler`.
Queries are checked (term support, arity) before anything runs, as the real
server compiles a query before executing it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rethinkdb.ql2_pb2 import Term

from .reql_datum import now_time, type_name
from .reql_errors import (
    ReqlCompileError,
    ReqlNonExistenceError,
    ReqlQueryLogicError,
)

if TYPE_CHECKING:
    from .reql_store import Store, TableLike

T = Term.TermType
TERM_NAMES: dict[int, str] = {v: k for k, v in vars(T).items() if not k.startswith("_")}

IMPLICIT = -1  # scope slot of r.row (the argument of the innermost one-argument function)

INFINITE = (
    "Cannot call a terminal (`reduce`, `count`, etc.) on an infinite stream (such as a changefeed)."
)

Scope = dict[int, Any]
Handler = Callable[["Ctx", list, dict, Scope], Any]


@dataclass
class Spec:
    fn: Handler
    min_args: int
    max_args: int | None
    lazy: bool  # the handler evaluates its own arguments (branch, and, default, ...)


HANDLERS: dict[int, Spec] = {}


def handler(
    term_type: int, min_args: int, max_args: int | None = -2, *, lazy: bool = False
) -> Callable[[Handler], Handler]:
    """Register a term handler. ``max_args`` defaults to ``min_args``; None is unbounded.

    Eager handlers get their arguments and optargs evaluated (r.args spliced in);
    lazy ones get the raw terms and evaluate them with ``ctx.ev``.
    """

    def register(fn: Handler) -> Handler:
        upper = min_args if max_args == -2 else max_args
        HANDLERS[term_type] = Spec(fn, min_args, upper, lazy)
        return fn

    return register


# -- runtime values that are not datums ------------------------------------------------


@dataclass
class DbRef:
    name: str


@dataclass
class Order:
    """``r.asc(x)`` / ``r.desc(x)`` inside ``order_by``."""

    descending: bool
    key: Any  # field name or Func


@dataclass
class Stream:
    """A finite sequence. ``table`` is set when it still reads one table:
    ``writable`` then allows update/delete/replace on it, and ``steps`` (when not
    None) are the per-document transforms a changefeed on it applies
    (filters return None for documents that do not match)."""

    produce: Callable[[], list]
    table: TableLike | None = None
    writable: bool = False
    steps: list[Callable[[Any], Any]] | None = None
    kind: str = "STREAM"  # TABLE, SELECTION<STREAM>, SELECTION<ARRAY>, STREAM
    _items: list | None = field(default=None, repr=False)

    def items(self) -> list:
        if self._items is None:
            self._items = self.produce()
        return self._items

    @classmethod
    def of(cls, items: list) -> Stream:
        return cls(produce=lambda: items, _items=items)


@dataclass
class SingleSel:
    """``table.get(key)``: one document (or None) that can be written and followed."""

    table: TableLike
    key: Any
    doc: Any


class Func:
    """A ReQL function closed over the scope it was built in."""

    __slots__ = ("body", "ctx", "params", "scope")

    def __init__(self, ctx: Ctx, params: list[int], body: Any, scope: Scope) -> None:
        self.ctx, self.params, self.body, self.scope = ctx, params, body, scope

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.params):
            raise ReqlQueryLogicError(
                f"Expected function with {plural(len(self.params), 'argument')} "
                f"but found function with {plural(len(args), 'argument')}."
            )
        scope = dict(self.scope)
        scope.update(zip(self.params, args, strict=True))
        if len(args) == 1:
            scope[IMPLICIT] = args[0]
        return self.ctx.datum(self.ctx.ev(self.body, scope))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the per-query context -------------------------------------------------------------


class Ctx:
    """Everything one query needs: the store, the default database and ``r.now()``."""

    def __init__(
        self, store: Store, default_db: str = "test", global_optargs: dict | None = None
    ) -> None:
        self.store = store
        self.default_db = default_db
        self.global_optargs = global_optargs or {}
        self._now: dict[str, Any] | None = None

    def global_opt(self, name: str, default: Any = None) -> Any:
        """A run() optarg (e.g. ``changefeed_queue_size``), evaluated on demand."""
        term = self.global_optargs.get(name)
        return default if term is None else self.datum(self.ev(term, {}))

    @property
    def now(self) -> dict[str, Any]:
        # One value per query: every row of the query sees the same r.now().
        if self._now is None:
            self._now = now_time()
        return self._now

    def ev(self, term: Any, scope: Scope) -> Any:
        """Evaluate a term to a datum or a runtime value (Stream, SingleSel, Func...)."""
        if type(term) is list:
            spec = HANDLERS[term[0]]
            args = term[1] if len(term) > 1 else []
            optargs = term[2] if len(term) > 2 else {}
            if spec.lazy:
                return spec.fn(self, args, optargs, scope)
            values = self.ev_args(args, scope)
            opts = {k: self.opt(self.ev(v, scope)) for k, v in optargs.items()}
            return spec.fn(self, values, opts, scope)
        if type(term) is dict:
            return {k: self.datum(self.ev(v, scope)) for k, v in term.items()}
        return term

    def ev_args(self, args: list, scope: Scope) -> list:
        out = []
        for arg in args:
            if type(arg) is list and arg and arg[0] == T.ARGS:
                out.extend(as_array(self.datum(self.ev(arg[1][0], scope))))
            else:
                out.append(self.ev(arg, scope))
        return out

    def datum(self, value: Any) -> Any:
        """A value as a datum: streams become arrays, a get() its document."""
        if isinstance(value, Stream):
            return value.items()
        if isinstance(value, SingleSel):
            return value.doc
        if hasattr(value, "notes"):
            raise ReqlQueryLogicError(INFINITE)
        if isinstance(value, (Func, DbRef, Order)):
            raise ReqlQueryLogicError(f"Expected type DATUM but found {kind_of(value)}.")
        return value

    def opt(self, value: Any) -> Any:
        """An optarg value: a datum, r.asc/r.desc (``order_by(index=r.desc(...))``)
        or a function (``insert(conflict=lambda ...)``)."""
        return value if isinstance(value, (Order, Func)) else self.datum(value)

    def func(self, value: Any, arity: int = 1) -> Callable[..., Any]:
        """A function argument; a plain value acts as a constant function."""
        if isinstance(value, Func):
            return value
        constant = self.datum(value)
        return lambda *_args: constant


def kind_of(value: Any) -> str:
    """``type_of`` of any value."""
    if isinstance(value, Stream):
        return value.kind
    if isinstance(value, SingleSel):
        return "SELECTION<OBJECT>"
    if isinstance(value, Func):
        return "FUNCTION"
    if isinstance(value, DbRef):
        return "DB"
    if isinstance(value, Order):
        return "ORDERING"
    if hasattr(value, "notes"):
        return "SEQUENCE"
    return type_name(value)


# -- argument coercion -------------------------------------------------------------------


def expect(value: Any, wanted: str) -> None:
    raise ReqlQueryLogicError(f"Expected type {wanted} but found {kind_of(value)}.")


def as_array(value: Any) -> list:
    if isinstance(value, list):
        return value
    if isinstance(value, Stream):
        return value.items()
    if hasattr(value, "notes"):
        raise ReqlQueryLogicError(INFINITE)
    raise ReqlQueryLogicError(f"Cannot convert {kind_of(value)} to SEQUENCE")


def as_seq(value: Any) -> list:
    """Items of an array or a stream (sequence operations accept both)."""
    return as_array(value)


def as_str(value: Any) -> str:
    if not isinstance(value, str):
        expect(value, "STRING")
    return value


def as_num(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        expect(value, "NUMBER")
    return value


def as_int(value: Any) -> int:
    number = as_num(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ReqlQueryLogicError(f"Number not an integer: {number!r}")
        return int(number)
    return number


def as_obj(value: Any) -> dict:
    if isinstance(value, SingleSel):
        value = value.doc
    if not isinstance(value, dict):
        expect(value, "OBJECT")
    return value


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        expect(value, "BOOL")
    return value


def get_field(value: Any, name: str) -> Any:
    """``obj(name)``; a missing field is a non-existence error, as in ReQL."""
    from .reql_datum import pretty

    obj = as_obj(value) if not isinstance(value, dict) else value
    try:
        return obj[name]
    except KeyError:
        raise ReqlNonExistenceError(f"No attribute `{name}` in object:\n{pretty(obj)}") from None


# -- compile-time check ------------------------------------------------------------------


def _arity_text(low: int, high: int | None) -> str:
    if low == high:
        return plural(low, "argument")
    if high is None:
        return f"{low} or more arguments"
    return f"between {low} and {high} arguments"


def check(term: Any) -> None:
    """Reject unsupported terms and wrong arities before anything runs."""
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
            raise ReqlCompileError(f"Term `{name}` is not supported by the ReQL test server.")
        args = term[1] if len(term) > 1 else []
        optargs = term[2] if len(term) > 2 else {}
        if not isinstance(args, list) or not isinstance(optargs, dict):
            raise ReqlCompileError("Expected a list of arguments and an object of optargs.")
        spliced = any(type(a) is list and a and a[0] == T.ARGS for a in args)
        count = len(args)
        if not spliced and (
            count < spec.min_args or (spec.max_args is not None and count > spec.max_args)
        ):
            raise ReqlCompileError(
                f"Expected {_arity_text(spec.min_args, spec.max_args)} but found {count}."
            )
        for arg in args:
            check(arg)
        for value in optargs.values():
            check(value)
    elif type(term) is dict:
        for value in term.values():
            check(value)


def each_datum(ctx: Ctx, values: Iterable[Any]) -> list:
    return [ctx.datum(v) for v in values]
