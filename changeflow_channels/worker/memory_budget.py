"""CHANGEFLOW_MEMORY_BUDGET: the bytes the histories and mirrors of all followed
tables may take together (``None``: no bound).

Each table keeps at most CHANGEFLOW_HISTORY changes and, while it has at most
CHANGEFLOW_SNAPSHOT_LIMIT documents, a mirror of them (``table_state.py``). With
many tables, those bounds multiply; the budget bounds their sum. Over budget,
the oldest change kept, whatever its table, is dropped first (a client resuming
from it gets ``resync: history_exceeded``, as when the history is exceeded);
once no history is left, the largest mirror goes (that table's snapshots are read
from RethinkDB until its next epoch).

Sizes are estimates from the JSON text (``estimated_bytes``): Python holds a
document in about 7 times its JSON size, plus its dicts.
"""

from __future__ import annotations

import weakref
from collections import deque
from typing import Any, Protocol

import orjson

# Python's objects for a document: about this many times its JSON text, plus a
# fixed cost per kept item (its dicts, key, position). Measured with tracemalloc
# on documents of a few fields (change messages: 1,900 bytes for 230 of JSON).
JSON_FACTOR = 7
ITEM_OVERHEAD = 300


def estimated_bytes(value: Any) -> int:
    """What keeping ``value`` (a change or a document, JSON-safe) costs, roughly."""
    try:
        size = len(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits
        size = len(repr(value))
    return JSON_FACTOR * size + ITEM_OVERHEAD


class Holder(Protocol):
    """What the budget asks of a table's state (``table_state.TableState``)."""

    mirror_bytes: int

    def holds(self, epoch: str, seq: int) -> bool:
        """Whether change ``seq`` of ``epoch`` is the oldest one kept."""
        ...

    def drop_oldest(self) -> None:
        """Drop the oldest change kept (releasing its bytes)."""
        ...

    def drop_mirror(self) -> None:
        """Drop the mirror (releasing its bytes)."""
        ...


class MemoryBudget:
    """The bytes used by all the tables' histories and mirrors, and the order in
    which their changes were kept (oldest first), to drop the oldest."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.used = 0
        self.kept = 0  # changes kept in all histories
        self.dropped = 0  # changes dropped to stay within the budget
        self.mirrors_dropped = 0
        # (holder, epoch, seq) of each change kept, in the order kept; entries of
        # changes gone meanwhile (history full, new epoch) are skipped, and
        # swept out when they outnumber the changes kept.
        self._order: deque[tuple[Holder, str, int]] = deque()
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()

    def join(self, holder: Holder) -> None:
        self._holders.add(holder)

    def kept_change(self, holder: Holder, epoch: str, seq: int, size: int) -> None:
        """A table kept a change of ``size`` bytes."""
        self.used += size
        self.kept += 1
        self._order.append((holder, epoch, seq))
        if len(self._order) > 2 * self.kept + 1024:
            self._order = deque(entry for entry in self._order if entry[0].holds(*entry[1:]))
        self.enforce()

    def dropped_change(self, size: int) -> None:
        """A table no longer keeps a change of ``size`` bytes."""
        self.used -= size
        self.kept -= 1

    def grew(self, size: int) -> None:
        """A mirror grew (or shrank: negative) by ``size`` bytes."""
        self.used += size
        if size > 0:
            self.enforce()

    def enforce(self) -> None:
        """Drop the oldest changes kept, then the largest mirrors, until within the limit."""
        if self.limit is None:
            return
        while self.used > self.limit and self._order:
            holder, epoch, seq = self._order.popleft()
            if holder.holds(epoch, seq):
                holder.drop_oldest()
                self.dropped += 1
        while self.used > self.limit:
            mirrored = [holder for holder in self._holders if holder.mirror_bytes > 0]
            if not mirrored:
                return
            max(mirrored, key=lambda holder: holder.mirror_bytes).drop_mirror()
            self.mirrors_dropped += 1
