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

from .reql_datum import PTYPE, now_time, num, sanitize_ptype
from .reql_errors import (
    ReqlQueryLogicError,
    ReqlResourceLimitError,
)
from .reql_grouped import (
    GROUP_SKIPS,
    GROUP_TRANSFORMS,
    WHOLE_GROUPS,
    Grouped,
)

if TYPE_CHECKING:
    from .reql_store import Store, TableLike

T = Term.TermType
TERM_NAMES: dict[int, str] = {v: k for k, v in vars(T).items() if not k.startswith("_")}

IMPLICIT = -1  # scope slot of r.row (the argument of the innermost one-argument function)

DEFAULT_ARRAY_LIMIT = 100_000
_ACCESSORS = frozenset({T.GET_FIELD, T.BRACKET, T.NTH, T.DEFAULT, T.FUNCALL})

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
    optargs: frozenset[str] | None = None  # the optargs it accepts (None: not checked)


HANDLERS: dict[int, Spec] = {}
# Checks of a term's raw arguments made before its arguments are compiled, for the
# errors the real server gives before any argument could fail (determinism of a write).
PRECHECKS: dict[int, Callable[[list, dict], None]] = {}


def handler(
    term_type: int,
    min_args: int,
    max_args: int | None = -2,
    *,
    lazy: bool = False,
    optargs: Iterable[str] | None = None,
) -> Callable[[Handler], Handler]:
    """Register a term handler. ``max_args`` defaults to ``min_args``; None is unbounded.
    ``optargs``, when given, are the only optargs the term accepts (others are a
    compile error, as on the real server).

    Eager handlers get their arguments and optargs evaluated (r.args spliced in);
    lazy ones get the raw terms and evaluate them with ``ctx.ev``.
    """

    def register(fn: Handler) -> Handler:
        upper = min_args if max_args == -2 else max_args
        allowed = None if optargs is None else frozenset(optargs)
        HANDLERS[term_type] = Spec(fn, min_args, upper, lazy, allowed)
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
    kind: str = "STREAM"  # TABLE, TABLE_SLICE, SELECTION<STREAM>, SELECTION<ARRAY>, STREAM
    slice: Any = None  # TABLE_SLICE: its index, bounds and order (reql_ops_select.Slice)
    lazy: Callable[[], Any] | None = None  # an infinite stream's items (reql_ops_lazy)
    limit: int | None = None  # ``limit(n)`` of an ordered TABLE_SLICE: a top-n changefeed
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
        return self.ctx.strict(self.call(*args))

    def call(self, *args: Any) -> Any:
        """The function's value as is (a stream stays a stream: ``do``, ``concat_map``)."""
        if len(args) != len(self.params) and self.params:
            raise ReqlQueryLogicError(
                f"Expected function with {plural(len(args), 'argument')} "
                f"but found function with {plural(len(self.params), 'argument')}."
            )
        scope = dict(self.scope)
        scope.update(zip(self.params, args, strict=False))
        if len(args) == 1 and self.params:
            scope[IMPLICIT] = args[0]
        return self.ctx.ev(self.body, scope)


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
        # run(array_limit=...): read when first needed (it is a term).
        self._array_limit: int | None = (
            None if "array_limit" in self.global_optargs else DEFAULT_ARRAY_LIMIT
        )

    def limit_array(self, size: int) -> None:
        limit = self.array_limit()
        if size > limit:
            raise ReqlResourceLimitError(
                f"Array over size limit `{limit}`.  To raise the number of allowed elements, "
                "modify the `array_limit` option to `.run` (not available in the Data "
                "Explorer), or use an index."
            )

    def array_limit(self) -> int:
        if self._array_limit is None:
            limit = as_int(self.global_opt("array_limit"))
            if limit < 1:
                raise ReqlQueryLogicError(f"Illegal array size limit `{limit}`.  (Must be >= 1.)")
            self._array_limit = limit
        return self._array_limit

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
                if any(type(a) is list and a and a[0] == T.ARGS for a in args):
                    args = self.splice_lazy(args, scope)
                    self.check_count(term[0], len(args))
                return spec.fn(self, args, optargs, scope)
            values = self.ev_args(args, scope)
            if len(values) != len(args):
                self.check_count(term[0], len(values))
            opts = {k: self.opt(self.ev(v, scope)) for k, v in optargs.items()}
            if values and type(values[0]) is Grouped and term[0] not in WHOLE_GROUPS:
                return self.per_group(term[0], values, opts, scope)
            result = spec.fn(self, values, opts, scope)
            if (
                type(result) is list
                and len(result) > (self._array_limit or 0)
                and term[0] not in _ACCESSORS  # a stored array is read, not built
            ):
                self.limit_array(len(result))
            return result
        if type(term) is dict:
            value = {k: self.strict(self.ev(v, scope)) for k, v in term.items()}
            return sanitize_ptype(value) if PTYPE in value else value
        if type(term) is float:
            return num(term)  # the real server answers r.expr(1.0) with 1
        return term

    def splice_lazy(self, args: list, scope: Scope) -> list:
        """A lazy term's arguments with r.args(...) spliced in (its values as
        datums); the other arguments stay terms, evaluated when needed."""
        out: list = []
        for arg in args:
            if type(arg) is list and arg and arg[0] == T.ARGS:
                values = as_array(self.datum(self.ev(arg[1][0], scope)))
                out.extend([T.DATUM, [value]] for value in values)
            else:
                out.append(arg)
        return out

    @staticmethod
    def check_count(ttype: int, count: int) -> None:
        """The arity check of a call whose r.args were spliced in at run time."""
        spec = HANDLERS[ttype]
        if count < spec.min_args or (spec.max_args is not None and count > spec.max_args):
            low, high = spec.min_args, spec.max_args
            if low == high:
                wanted = plural(low, "argument")
            elif high is None:
                wanted = f"{low} or more arguments"
            else:
                wanted = f"between {low} and {high} arguments"
            raise ReqlQueryLogicError(f"Expected {wanted} but found {count}.")

    def per_group(self, ttype: int, values: list, opts: dict, scope: Scope) -> Grouped:
        """A term on grouped data: applied to each group's value."""
        spec, grouped, rest = HANDLERS[ttype], values[0], values[1:]
        out = {}
        for key, (group, value) in grouped.groups.items():
            # Grouped data among the other arguments gives the same group's value.
            own = [v.groups[key][1] if type(v) is Grouped and key in v.groups else v for v in rest]
            skip = GROUP_SKIPS.get(ttype)
            if skip is not None and not skip(self, [value, *own]):
                continue
            out[key] = (group, self.datum(spec.fn(self, [value, *own], opts, scope)))
        return Grouped(out, stream=grouped.stream and ttype in GROUP_TRANSFORMS)

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
        if type(value) is Grouped:
            rows = sum(len(v) for _g, v in value.groups.values() if type(v) is list)
            if rows > (self._array_limit or 0) and rows > self.array_limit():
                raise ReqlResourceLimitError(
                    f"Grouped data over size limit `{self.array_limit()}`.  Try putting a "
                    "reduction (like `.reduce` or `.count`) on the end."
                )
            if len(value.groups) > (self._array_limit or 0):
                self.limit_array(len(value.groups))  # the [[group, value], ...] array
            return value.as_datum()
        if isinstance(value, (Func, DbRef, Order)):
            raise ReqlQueryLogicError(f"Expected type DATUM but found {kind_of(value)}.")
        return value

    def strict(self, value: Any) -> Any:
        """A value where the real server wants a DATUM and refuses a sequence
        (``r.expr(5) + tbl``, ``r.branch(tbl, ...)``, object fields)."""
        if isinstance(value, SingleSel):
            return value.doc
        if type(value) is Grouped:
            return value.as_datum()
        if isinstance(value, (Stream, Func, DbRef, Order)) or hasattr(value, "notes"):
            raise literal_type_error(value, "DATUM")
        return value

    def opt(self, value: Any) -> Any:
        """An optarg value: a datum, r.asc/r.desc (``order_by(index=r.desc(...))``)
        or a function (``insert(conflict=lambda ...)``)."""
        return value if isinstance(value, (Order, Func)) else self.datum(value)

    def strict_func(self, value: Any) -> Func:
        """A function argument where the real server takes no constant (``map(1)``)."""
        if not isinstance(value, Func):
            raise literal_type_error(value, "FUNCTION")
        return value

    def func(self, value: Any, arity: int = 1) -> Callable[..., Any]:
        """A function argument; a plain value acts as a constant function."""
        if isinstance(value, Func):
            return value
        constant = self.datum(value)
        return lambda *_args: constant


# The value kinds and argument coercions live in reql_coerce (they need the runtime
# values above); importing them from here works as before.
from .reql_coerce import (  # noqa: E402, F401
    as_array,
    as_bool,
    as_int,
    as_num,
    as_obj,
    as_seq,
    as_str,
    each_datum,
    expect,
    get_field,
    kind_of,
    literal_type_error,
    print_value,
    raw_type,
)


def __getattr__(name: str) -> Any:
    """``check`` and ``unsupported`` moved to reql_check (which needs the registry
    above); importing them from here still works."""
    if name in ("check", "unsupported"):
        from . import reql_check

        return getattr(reql_check, name)
    raise AttributeError(name)
