"""CHANGEFLOW_WATCH patterns: ``"db.table"``, ``"db.*"`` or ``"*"``."""

from __future__ import annotations

from collections.abc import Iterable

from ..names import RESERVED_DATABASES, InvalidName, validate_name


def check_pattern(pattern: object) -> str:
    """Return ``pattern`` if valid; raise ``InvalidName`` saying why not."""
    if pattern == "*":
        return pattern
    if not isinstance(pattern, str) or "." not in pattern:
        raise InvalidName(f'watch pattern {pattern!r} must be "*", "db.*" or "db.table"')
    database, _, table = pattern.partition(".")
    validate_name(database, "database")
    if table != "*":
        validate_name(table, "table")
    return pattern


class WatchPatterns:
    """Decides which tables the worker follows. The system database (and changeflow's
    own) never matches."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [check_pattern(p) for p in patterns]

    def matches(self, database: str, table: str) -> bool:
        if database in RESERVED_DATABASES:
            return False
        for pattern in self.patterns:
            if pattern in ("*", f"{database}.*", f"{database}.{table}"):
                return True
        return False
