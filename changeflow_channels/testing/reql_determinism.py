"""Whether a term is deterministic, as the real server decides it before running.

RethinkDB refuses a non-deterministic function where it must replay it: after
``changes()`` transforms, in an atomic ``update``/``replace``, as an ``insert``
conflict function or a write hook. Non-deterministic terms: those reading
databases and tables or their metadata, ``r.random``, ``r.js``, ``r.http``, and
``r.uuid()`` without an argument. ``r.now()`` counts as deterministic (it is one
value per query).
"""

from __future__ import annotations

from typing import Any

from .reql_eval import T

NON_DETERMINISTIC = frozenset(
    {
        T.DB,
        T.TABLE,
        T.DB_CREATE,
        T.DB_DROP,
        T.DB_LIST,
        T.TABLE_CREATE,
        T.TABLE_DROP,
        T.TABLE_LIST,
        T.CONFIG,
        T.STATUS,
        T.WAIT,
        T.RECONFIGURE,
        T.REBALANCE,
        T.SYNC,
        T.GRANT,
        T.INDEX_CREATE,
        T.INDEX_DROP,
        T.INDEX_LIST,
        T.INDEX_STATUS,
        T.INDEX_WAIT,
        T.INDEX_RENAME,
        T.SET_WRITE_HOOK,
        T.GET_WRITE_HOOK,
        T.RANDOM,
        T.JAVASCRIPT,
        T.HTTP,
    }
)


def deterministic(term: Any) -> bool:
    """True when nothing in ``term`` is non-deterministic."""
    if type(term) is list:
        if not term or not isinstance(term[0], int) or term[0] == T.DATUM:
            return True
        ttype = term[0]
        args = term[1] if len(term) > 1 and isinstance(term[1], list) else []
        if ttype in NON_DETERMINISTIC:
            return False
        if ttype == T.UUID and (
            len(args) != 1 or (type(args[0]) is list and args[0] and args[0][0] == T.ARGS)
        ):
            return False
        optargs = term[2] if len(term) > 2 and isinstance(term[2], dict) else {}
        return all(deterministic(a) for a in args) and all(
            deterministic(v) for v in optargs.values()
        )
    if type(term) is dict:
        return all(deterministic(v) for v in term.values())
    return True


def functions_deterministic(term: Any) -> bool:
    """True when every function (``FUNC`` term) inside ``term`` is deterministic."""
    if type(term) is list:
        if not term or not isinstance(term[0], int) or term[0] == T.DATUM:
            return True
        if term[0] == T.FUNC:
            return deterministic(term)
        args = term[1] if len(term) > 1 and isinstance(term[1], list) else []
        optargs = term[2] if len(term) > 2 and isinstance(term[2], dict) else {}
        return all(functions_deterministic(a) for a in args) and all(
            functions_deterministic(v) for v in optargs.values()
        )
    if type(term) is dict:
        return all(functions_deterministic(v) for v in term.values())
    return True
