"""``CHANGEFLOW_TABLES``: tables' primary keys, secondary indexes and retention.

::

    CHANGEFLOW_TABLES = {
        "testdb.testtable": {
            "primary_key": "uid",                                   # default "id"
            "indexes": ["created", ["by_user_and_day", ["user", "day"]]],
            "retention": {"field": "created", "max_age": 86400},    # or "max_rows": 1000
            "replicas": 3,                                          # default 1
            "shards": 1,                                            # default 1
        },
    }

An index is a name (an index on the field of that name) or ``[name, [field, ...]]``
(a compound index on those fields). ``replicas`` and ``shards`` are given to
``table_create`` when the worker creates the table (an existing table is left as
it is). ``parse_tables`` turns the setting into typed
objects or raises ``TableConfigError`` (a ``ValueError``) saying what is wrong;
``table_problems`` lists every problem (for ``manage.py check``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..names import InvalidName, parse_stream

TABLE_KEYS = ("primary_key", "indexes", "retention", "replicas", "shards")
RETENTION_KEYS = ("field", "max_age", "max_rows")
# A plain (top-level) field name; index names follow RethinkDB's rule for names.
FIELD_RE = re.compile(r"[A-Za-z0-9_$-]+")
INDEX_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")

# What each kind of problem is reported as by ``manage.py check``, and its hint.
BAD_STREAM = "changeflow_channels.E010"
UNKNOWN_KEY = "changeflow_channels.E011"
BAD_PRIMARY_KEY = "changeflow_channels.E012"
BAD_INDEX = "changeflow_channels.E013"
BAD_RETENTION = "changeflow_channels.E014"
BAD_RETENTION_FIELD = "changeflow_channels.E015"
BAD_PLACEMENT = "changeflow_channels.E017"
# RethinkDB's own bounds: at most 64 shards, and a replica per server.
MAX_SHARDS = 64
HINTS = {
    BAD_STREAM: 'Keys are "database.table" streams with names of A-Z, a-z, 0-9, _ and -.',
    UNKNOWN_KEY: 'A table takes "primary_key", "indexes", "retention", "replicas" and '
    '"shards"; a retention takes "field" and one of "max_age" or "max_rows".',
    BAD_PRIMARY_KEY: 'For example "primary_key": "uid" (the default is "id").',
    BAD_INDEX: 'For example "indexes": ["created", ["by_user_and_day", ["user", "day"]]].',
    BAD_RETENTION: 'For example "retention": {"field": "created", "max_age": 86400} '
    'or {"field": "created", "max_rows": 1000}.',
    BAD_RETENTION_FIELD: "Name the document field holding the time (or a simple index on it).",
    BAD_PLACEMENT: 'For example "replicas": 3, "shards": 1 (positive integers; at most '
    f"{MAX_SHARDS} shards; no more replicas than servers).",
}


class TableConfigError(ValueError):
    """One problem in ``CHANGEFLOW_TABLES``; ``check_id`` names its kind, ``hint`` says
    what would do."""

    def __init__(self, message: str, check_id: str) -> None:
        super().__init__(message)
        self.check_id = check_id
        self.hint = HINTS[check_id]


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index: on one field (simple) or on several (compound)."""

    name: str
    fields: tuple[str, ...]
    compound: bool = False


@dataclass(frozen=True)
class Retention:
    """Delete documents older than ``max_age`` seconds, or all but the newest ``max_rows``."""

    field: str
    max_age: float | None = None
    max_rows: int | None = None


@dataclass(frozen=True)
class TableConfig:
    database: str
    table: str
    primary_key: str = "id"
    indexes: tuple[IndexSpec, ...] = field(default_factory=tuple)
    retention: Retention | None = None
    replicas: int = 1
    shards: int = 1

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"

    def simple_index(self, name: str) -> IndexSpec | None:
        """The configured index on the single field ``name``, if there is one."""
        for index in self.indexes:
            if index.name == name and not index.compound:
                return index
        return None


TablesConfig = dict[tuple[str, str], TableConfig]


def parse_tables(setting: Any) -> TablesConfig:
    """The whole setting, parsed; raises ``TableConfigError`` naming every problem."""
    problems = all_problems(setting)
    if problems:
        message = "; ".join(str(p) for p in problems)
        raise TableConfigError(f"CHANGEFLOW_TABLES: {message}", problems[0].check_id)
    tables: TablesConfig = {}
    for stream, spec in setting.items():
        config = _build(stream, spec)
        tables[(config.database, config.table)] = config
    return tables


def all_problems(setting: Any) -> list[TableConfigError]:
    """Every problem in the setting (an empty list when it is fine)."""
    if not isinstance(setting, dict):
        return [
            TableConfigError(
                f'must be a dict of "database.table": {{...}}, not {type(setting).__name__}',
                BAD_STREAM,
            )
        ]
    return [problem for stream, spec in setting.items() for problem in table_problems(stream, spec)]


def table_problems(stream: Any, spec: Any) -> list[TableConfigError]:
    """Every problem of one entry of the setting."""
    try:
        parse_stream(stream)
    except InvalidName as error:
        return [TableConfigError(f"{error}", BAD_STREAM)]
    if not isinstance(spec, dict):
        message = f"{stream}: must be a dict, not {type(spec).__name__}"
        return [TableConfigError(message, UNKNOWN_KEY)]
    return list(_problems(stream, spec))


def _unknown_keys(
    where: str, entry: dict[str, Any], allowed: Sequence[str]
) -> Iterator[TableConfigError]:
    unknown = sorted(str(key) for key in entry if key not in allowed)
    if unknown:
        yield TableConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(allowed)})",
            UNKNOWN_KEY,
        )


def _problems(stream: str, spec: dict[str, Any]) -> Iterator[TableConfigError]:
    yield from _unknown_keys(stream, spec, TABLE_KEYS)
    primary_key = spec.get("primary_key", "id")
    if not _is_field(primary_key):
        yield TableConfigError(
            f"{stream}: primary_key must be a field name (A-Z, a-z, 0-9, _, $ and -), "
            f"not {primary_key!r}",
            BAD_PRIMARY_KEY,
        )
    indexes = spec.get("indexes", [])
    if not isinstance(indexes, list | tuple):
        yield TableConfigError(f"{stream}: indexes must be a list, not {indexes!r}", BAD_INDEX)
        indexes = []
    seen: set[str] = set()
    for raw in indexes:
        try:
            index = _index(raw)
        except ValueError as error:
            yield TableConfigError(f"{stream}: index {raw!r}: {error}", BAD_INDEX)
            continue
        if index.name == primary_key:
            yield TableConfigError(
                f"{stream}: index {index.name!r} has the primary key's name", BAD_INDEX
            )
        elif index.name in seen:
            yield TableConfigError(f"{stream}: index {index.name!r} is listed twice", BAD_INDEX)
        seen.add(index.name)
    if "retention" in spec:
        yield from _retention_problems(stream, spec["retention"], indexes)
    for key, most in (("replicas", None), ("shards", MAX_SHARDS)):
        value = spec.get(key, 1)
        if not _positive(value, integer=True) or (most is not None and value > most):
            bound = f" of at most {most}" if most is not None else ""
            yield TableConfigError(
                f"{stream}: {key} must be a positive integer{bound}, not {value!r}", BAD_PLACEMENT
            )


def _retention_problems(
    stream: str, retention: Any, indexes: list[Any] | tuple[Any, ...]
) -> Iterator[TableConfigError]:
    where = f"{stream}: retention"
    if not isinstance(retention, dict):
        yield TableConfigError(f"{where} must be a dict, not {retention!r}", BAD_RETENTION)
        return
    yield from _unknown_keys(where, retention, RETENTION_KEYS)
    if "field" not in retention:
        yield TableConfigError(
            f"{where} needs a field (the document field holding the time or order)",
            BAD_RETENTION,
        )
    else:
        yield from _retention_field_problems(where, retention["field"], indexes)
    limits = [key for key in ("max_age", "max_rows") if key in retention]
    if len(limits) != 1:
        yield TableConfigError(
            f"{where} needs exactly one of max_age (seconds) or max_rows, not "
            f"{'both' if limits else 'neither'}",
            BAD_RETENTION,
        )
    if "max_age" in retention and not _positive(retention["max_age"]):
        yield TableConfigError(
            f"{where}: max_age must be a positive number of seconds, not {retention['max_age']!r}",
            BAD_RETENTION,
        )
    if "max_rows" in retention and not _positive(retention["max_rows"], integer=True):
        yield TableConfigError(
            f"{where}: max_rows must be a positive integer, not {retention['max_rows']!r}",
            BAD_RETENTION,
        )


def _retention_field_problems(
    where: str, name: Any, indexes: list[Any] | tuple[Any, ...]
) -> Iterator[TableConfigError]:
    compound = set()
    for raw in indexes:
        try:
            index = _index(raw)
        except ValueError:
            continue
        if index.compound:
            compound.add(index.name)
    if isinstance(name, str) and name in compound:
        yield TableConfigError(
            f"{where}: field {name!r} is a compound index; retention needs a single field "
            "(a plain field name or a simple index)",
            BAD_RETENTION_FIELD,
        )
    elif not _is_field(name):
        yield TableConfigError(
            f"{where}: field {name!r} is neither an index nor a plain field name "
            "(A-Z, a-z, 0-9, _, $ and -)",
            BAD_RETENTION_FIELD,
        )


def _index(raw: Any) -> IndexSpec:
    """``"name"`` or ``[name, [field, ...]]``; raises ValueError."""
    if isinstance(raw, str):
        if not INDEX_NAME_RE.fullmatch(raw):
            raise ValueError("an index name uses A-Z, a-z, 0-9, _ and - only")
        return IndexSpec(raw, (raw,))
    if (
        isinstance(raw, list | tuple)
        and len(raw) == 2
        and isinstance(raw[0], str)
        and isinstance(raw[1], list | tuple)
    ):
        name, fields = raw
        if not INDEX_NAME_RE.fullmatch(name):
            raise ValueError("an index name uses A-Z, a-z, 0-9, _ and - only")
        if not fields or not all(_is_field(f) for f in fields):
            raise ValueError("a compound index needs a non-empty list of field names")
        return IndexSpec(name, tuple(fields), compound=True)
    raise ValueError("expected a name, or [name, [field, ...]] for a compound index")


def _build(stream: str, spec: dict[str, Any]) -> TableConfig:
    database, table = parse_stream(stream)
    retention = None
    if "retention" in spec:
        raw = spec["retention"]
        max_age = raw.get("max_age")
        retention = Retention(
            field=raw["field"],
            max_age=float(max_age) if max_age is not None else None,
            max_rows=raw.get("max_rows"),
        )
    return TableConfig(
        database=database,
        table=table,
        primary_key=spec.get("primary_key", "id"),
        indexes=tuple(_index(raw) for raw in spec.get("indexes", [])),
        retention=retention,
        replicas=spec.get("replicas", 1),
        shards=spec.get("shards", 1),
    )


def _is_field(value: Any) -> bool:
    return isinstance(value, str) and bool(FIELD_RE.fullmatch(value))


def _positive(value: Any, *, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if integer and not isinstance(value, int):
        return False
    return math.isfinite(value) and value > 0
