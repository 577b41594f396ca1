"""Stream names: ``"<database>.<table>"``, also the channel-layer group name.

RethinkDB's own rule for names is ``[A-Za-z0-9_-]+``; the channel layer caps
group names below 100 characters. Anything else is refused here, before it
reaches RethinkDB or the channel layer.
"""

from __future__ import annotations

import re

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
MAX_STREAM_LENGTH = 99
SYSTEM_DATABASE = "rethinkdb"
# The project's own: the records of idempotent pushes (worker/idempotency.py).
INTERNAL_DATABASE = "changeflow_internal"
# Never followed, streamed or written by pushes.
RESERVED_DATABASES = (SYSTEM_DATABASE, INTERNAL_DATABASE)


class InvalidName(ValueError):
    """A database, table or stream name that RethinkDB or the channel layer would refuse."""


def validate_name(name: object, kind: str = "database") -> str:
    """Return ``name`` if it is a valid RethinkDB database or table name."""
    if not isinstance(name, str) or not name:
        raise InvalidName(f"{kind} name must be a non-empty string, not {name!r}")
    if not NAME_RE.fullmatch(name):
        raise InvalidName(f"{kind} name {name!r} is invalid (use A-Z, a-z, 0-9, _ and - only)")
    return name


def stream_name(database: object, table: object) -> str:
    """``"db.table"`` for valid names; raises ``InvalidName`` otherwise."""
    validate_name(database, "database")
    validate_name(table, "table")
    if database == SYSTEM_DATABASE:
        # Its tables are RethinkDB's users, permissions and configuration.
        raise InvalidName(f"the system database {SYSTEM_DATABASE!r} cannot be streamed or written")
    if database == INTERNAL_DATABASE:
        raise InvalidName(
            f"the database {INTERNAL_DATABASE!r} is changeflow's own: it cannot be streamed or written"
        )
    stream = f"{database}.{table}"
    if len(stream) > MAX_STREAM_LENGTH:
        raise InvalidName(
            f"stream name {stream!r} is too long (at most {MAX_STREAM_LENGTH} characters)"
        )
    return stream


def parse_stream(stream: object) -> tuple[str, str]:
    """Split ``"db.table"`` into its two names, validating both."""
    if not isinstance(stream, str):
        raise InvalidName(f'stream must be a string "database.table", not {stream!r}')
    database, dot, table = stream.partition(".")
    if not dot:
        raise InvalidName(f'stream {stream!r} must be "database.table"')
    stream_name(database, table)
    return database, table
