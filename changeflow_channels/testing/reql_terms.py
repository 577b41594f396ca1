"""Entry point of the ReQL term evaluator: importing this registers every
supported term (see the ``reql_ops_*``, ``reql_writes`` and ``reql_feeds``
modules) and exposes :func:`compile_and_run`."""

from __future__ import annotations

from typing import Any

from . import (
    reql_feeds_term,
    reql_ops_admin,
    reql_ops_aggregate,
    reql_ops_array,
    reql_ops_control,
    reql_ops_data,
    reql_ops_fold,
    reql_ops_group,
    reql_ops_info,
    reql_ops_join,
    reql_ops_lazy,
    reql_ops_math,
    reql_ops_obj,
    reql_ops_order,
    reql_ops_random,
    reql_ops_select,
    reql_ops_seq,
    reql_ops_time,
    reql_ops_users,
    reql_writes,
)
from .reql_check import check
from .reql_eval import HANDLERS, TERM_NAMES, Ctx

# The modules above register their handlers on import.
MODULES = (
    reql_feeds_term,
    reql_ops_admin,
    reql_ops_aggregate,
    reql_ops_array,
    reql_ops_control,
    reql_ops_data,
    reql_ops_fold,
    reql_ops_group,
    reql_ops_info,
    reql_ops_join,
    reql_ops_lazy,
    reql_ops_math,
    reql_ops_random,
    reql_ops_obj,
    reql_ops_order,
    reql_ops_select,
    reql_ops_seq,
    reql_ops_time,
    reql_ops_users,
    reql_writes,
)


def supported_terms() -> list[str]:
    """Names of the terms the test server understands (for docs and tests)."""
    return sorted(TERM_NAMES[t] for t in HANDLERS if t in TERM_NAMES)


def compile_and_run(ctx: Ctx, term: Any) -> Any:
    """Check the whole term tree (unsupported terms, arity), then evaluate it."""
    check(term)
    return ctx.ev(term, {})
