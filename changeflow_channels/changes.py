"""Turning one raw changefeed item into the ``changeflow.change`` message."""

from __future__ import annotations

from typing import Any

CHANGE_TYPE = "changeflow.change"
BATCH_TYPE = "changeflow.batch"


def change_kind(item: dict[str, Any]) -> str:
    """add / change / remove, from the feed's own ``type`` or from the values."""
    kind = item.get("type")
    if kind in ("add", "change", "remove"):
        return kind
    if item.get("old_val") is None:
        return "add"
    if item.get("new_val") is None:
        return "remove"
    return "change"


def build_change(item: dict[str, Any], *, initial_as_add: bool = False) -> dict[str, Any]:
    """The ``change`` part: ``{"type", "old_val", "new_val"}``, from an item
    decoded by ``jsonsafe.RawDecoder`` (already JSON-safe: not walked again).

    ``initial`` items stay ``initial`` unless ``initial_as_add``: for a table
    that appeared while the worker was watching, every document is new to the
    subscribers, so it is announced as an ``add``.
    """
    kind = item.get("type")
    if kind == "initial":
        kind = "add" if initial_as_add else "initial"
    elif kind not in ("add", "change", "remove"):
        kind = change_kind(item)
    return {
        "type": kind,
        "old_val": item.get("old_val"),
        "new_val": item.get("new_val"),
    }


def change_message(
    database: str, table: str, change: dict[str, Any], epoch: str, seq: int
) -> dict[str, Any]:
    return {
        "type": CHANGE_TYPE,
        "database": database,
        "table": table,
        "change": change,
        "epoch": epoch,
        "seq": seq,
    }


EPOCH_TYPE = "changeflow.epoch"


def epoch_message(
    database: str, table: str, epoch: str, seq: int, *, since_creation: bool
) -> dict[str, Any]:
    """A table's feed began ``epoch`` and caught up after change ``seq`` of it.

    ``since_creation``: the epoch's changes start with the table's creation (a
    table that appeared: its documents were announced as ``add``), so nothing
    written before them can be missed."""
    return {
        "type": EPOCH_TYPE,
        "database": database,
        "table": table,
        "epoch": epoch,
        "seq": seq,
        "since_creation": since_creation,
    }
