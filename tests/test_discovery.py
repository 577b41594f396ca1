"""Table discovery's bookkeeping, fed ``rethinkdb.table_config`` changes without I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.tables.ddl import SPARE_SUFFIX
from changeflow_channels.worker.discovery import TableDiscovery


def row(table_id: str, name: str = "t", db: str = "d") -> dict[str, Any]:
    return {"id": table_id, "db": db, "name": name, "primary_key": "id"}


def add(table_id: str, name: str = "t") -> dict[str, Any]:
    return {"type": "add", "old_val": None, "new_val": row(table_id, name)}


def remove(table_id: str, name: str = "t") -> dict[str, Any]:
    return {"type": "remove", "old_val": row(table_id, name), "new_val": None}


READY = {"type": "state", "state": "ready"}


async def feed(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        yield item


async def told(items: list[dict[str, Any]]) -> list[tuple]:
    events: list[tuple] = []
    discovery = TableDiscovery(
        None,  # type: ignore[arg-type]  # never connects: fed by hand
        parse_rethinkdb_url("rethinkdb://127.0.0.1:1"),
        lambda db, table, key, appeared: events.append(("added", table, appeared)),
        lambda db, table: events.append(("removed", table)),
        lambda db, table: events.append(("clashed", table)),
    )
    await discovery._read(feed(items), True, set())
    return events


async def test_a_table_dropped_and_created_again_is_a_new_table_in_either_order():
    initial = [{"type": "initial", "old_val": None, "new_val": row("a1")}, READY]
    in_order = await told([*initial, remove("a1"), add("a2")])
    assert in_order == [("added", "t", False), ("removed", "t"), ("added", "t", True)]
    # RethinkDB does not order the changes of different rows.
    reordered = await told([*initial, add("a2"), remove("a1")])
    assert reordered == [
        ("added", "t", False),
        ("clashed", "t"),
        ("removed", "t"),
        ("added", "t", True),
    ]


async def test_racing_creates_are_one_table_reported_as_a_clash():
    spare = f"t{SPARE_SUFFIX}x2"
    events = await told(
        [
            READY,
            add("x2"),
            add("x1"),
            # The repair renames the extra table, then drops it.
            {"type": "change", "old_val": row("x2"), "new_val": row("x2", spare)},
            remove("x2", spare),
        ]
    )
    # x2 was added first, so it is the one whose loss counts: the name moves on to x1.
    # The renamed extra is the repair's, never a stream of its own.
    assert events == [
        ("added", "t", True),
        ("clashed", "t"),
        ("removed", "t"),
        ("added", "t", True),
    ]
