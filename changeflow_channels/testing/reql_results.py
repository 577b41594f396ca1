"""What the engine hands back to the wire layer for one START query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Atom:
    """A single value: sent as SUCCESS_ATOM."""

    value: Any


@dataclass
class Sequence:
    """A finite sequence: sent as SUCCESS_SEQUENCE (the wire layer cuts long
    ones into SUCCESS_PARTIAL batches answered by CONTINUE, as the real server does)."""

    items: list[Any]


class Feed(Protocol):
    """An open changefeed: sent as SUCCESS_PARTIAL batches until STOP.

    ``notes`` are ``Response.ResponseNote`` values (SEQUENCE_FEED, ATOM_FEED,
    INCLUDES_STATES ...) sent with every batch. A feed ends with its last batch
    once ``done``.
    """

    notes: list[int]
    done: bool  # the last item is delivered (``.limit(n)``): answered as SUCCESS_SEQUENCE

    def first_batch(self) -> list[Any]:
        """What the START answer carries, without waiting (may be empty):
        state documents and initial values that are ready now."""

    async def next_batch(self) -> list[Any]:
        """Wait until at least one item is available and return all buffered
        items. Raises a ``ReqlServerError`` when the feed is aborted (table
        dropped: ``ReqlOpFailedError("Changefeed aborted (unavailable).")``)."""

    def close(self) -> None:
        """Stop the feed (STOP, or the client went away). Idempotent."""
