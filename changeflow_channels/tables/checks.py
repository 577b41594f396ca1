"""System checks for CHANGEFLOW_TABLES (keys, indexes, retention) and CHANGEFLOW_CLEAN_EVERY."""

from __future__ import annotations

import math
from typing import Any

from django.core.checks import Error, Tags, register

from ..conf import get_settings
from .config import (
    BAD_INDEX,
    BAD_PRIMARY_KEY,
    BAD_RETENTION,
    BAD_RETENTION_FIELD,
    BAD_STREAM,
    UNKNOWN_KEY,
    all_problems,
)

BAD_CLEAN_EVERY = "changeflow_channels.E016"

HINTS = {
    BAD_STREAM: 'Keys are "database.table" streams with names of A-Z, a-z, 0-9, _ and -.',
    UNKNOWN_KEY: 'A table takes "primary_key", "indexes" and "retention"; a retention takes '
    '"field" and one of "max_age" or "max_rows".',
    BAD_PRIMARY_KEY: 'For example "primary_key": "uid" (the default is "id").',
    BAD_INDEX: 'For example "indexes": ["created", ["by_user_and_day", ["user", "day"]]].',
    BAD_RETENTION: 'For example "retention": {"field": "created", "max_age": 86400} '
    'or {"field": "created", "max_rows": 1000}.',
    BAD_RETENTION_FIELD: "Name the document field holding the time (or a simple index on it).",
}


@register(Tags.compatibility)
def check_tables(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    conf = get_settings()
    messages: list[Any] = [
        Error(f"CHANGEFLOW_TABLES: {problem}.", hint=HINTS[problem.check_id], id=problem.check_id)
        for problem in all_problems(conf.tables)
    ]
    every = conf.clean_every
    if (
        isinstance(every, bool)
        or not isinstance(every, int | float)
        or not math.isfinite(every)
        or every <= 0
    ):
        messages.append(
            Error(
                f"CHANGEFLOW_CLEAN_EVERY must be a positive number of seconds, not {every!r}.",
                hint="The default is 60.0.",
                id=BAD_CLEAN_EVERY,
            )
        )
    return messages
