"""The query engine of the in-memory ReQL test server.

The wire layer decodes a START query and calls :meth:`Engine.run`; the result
is an :class:`Atom`, a :class:`Sequence` or a changefeed (the ``Feed`` protocol of
``reql_results``). Errors are raised as the ``reql_errors`` classes.

All state (databases, tables, open feeds) lives in the engine, so the wire
layer can keep it across a simulated restart or replace it to lose the data.
Everything runs on one asyncio loop; ``run`` never awaits while it reads or
writes, so each query (and every change it queues to feeds) is atomic.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .reql_check import check
from .reql_datum import check_json
from .reql_errors import (
    ReqlInternalError,
    ReqlQueryLogicError,
    ReqlResourceLimitError,
    ReqlServerError,
)
from .reql_eval import Ctx, DbRef, SingleSel, Stream
from .reql_feeds import ChangeFeed
from .reql_ops_lazy import INFINITE_RESULT
from .reql_optargs import check_global_optargs
from .reql_results import Atom, Feed, Sequence
from .reql_store import FEED_UNAVAILABLE, Store
from .reql_terms import compile_and_run

logger = logging.getLogger(__name__)


def _as_json(term: Any) -> Any:
    """Accept driver query objects (``r.table("t").build()`` keeps nested RqlQuery
    objects) by serializing them the way the driver does; JSON passes as is."""
    if isinstance(term, list) and len(term) > 1 and isinstance(term[1], list):
        if not any(hasattr(a, "build") for a in term[1]) and not (
            len(term) > 2
            and isinstance(term[2], dict)
            and any(hasattr(v, "build") for v in term[2].values())
        ):
            return term
    elif not hasattr(term, "build") and not isinstance(term, dict):
        return term
    from rethinkdb.ast import ReQLEncoder

    return json.loads(ReQLEncoder().encode(term))


class Engine:
    """Evaluates ReQL terms against an in-memory store."""

    def __init__(self, server_name: str = "reql_test_server") -> None:
        # A fresh store has the database "test", as a fresh real server does.
        self.store = Store(server_name)

    async def run(self, term: Any, global_optargs: dict[str, Any]) -> Atom | Sequence | Feed:
        """Run one query. ``global_optargs`` are the START optargs, values as terms."""
        try:
            term = _as_json(term)
            opts = {k: _as_json(v) for k, v in (global_optargs or {}).items()}
            check_global_optargs(opts)
            ctx = Ctx(self.store, self._default_db(opts), opts)
            value = compile_and_run(ctx, term)
            return self._result(ctx, value)
        except ReqlServerError:
            raise
        except RecursionError:
            raise ReqlResourceLimitError("Query too deeply nested.") from None
        except Exception as exc:  # a bug or an input the engine did not foresee
            logger.exception("ReQL test server: query failed unexpectedly: %r", term)
            raise ReqlInternalError(f"ReQL test server internal error: {exc!r}") from exc

    def _default_db(self, global_optargs: dict[str, Any]) -> str:
        db_term = global_optargs.get("db")
        if db_term is None:
            return "test"
        check(db_term)
        db = Ctx(self.store).ev(db_term, {})
        if not isinstance(db, DbRef):
            raise ReqlQueryLogicError("Expected type DATABASE for the `db` optarg.")
        return db.name

    @staticmethod
    def _result(ctx: Ctx, value: Any) -> Atom | Sequence | Feed:
        if isinstance(value, ChangeFeed):
            value.start()
            return value
        if isinstance(value, Stream):
            if value.lazy is not None:
                raise ReqlQueryLogicError(INFINITE_RESULT)
            return Sequence(list(value.items()))
        if isinstance(value, SingleSel):
            return Atom(value.doc)
        value = ctx.datum(value)
        check_json(value)
        return Atom(value)

    def abort_feeds(self, message: str = FEED_UNAVAILABLE) -> None:
        """Fault injection: every open feed raises ReqlOpFailedError(message) on next_batch."""
        for source in self.store.all_sources():
            source.abort_feeds(message)
