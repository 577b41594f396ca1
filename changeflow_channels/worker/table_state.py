"""What the worker remembers of a followed table: its recent changes and, while the
table is small enough, its current documents.

Both are updated by the feed between two reads of the changefeed, so a sync
answer built from them without awaiting anything is exact at one ``(epoch, seq)``:
``sync_answer`` is pure, it reads a ``TableState`` without awaiting.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from ..sync import SYNC_RESULT_TYPE, SyncRequest
from .memory_budget import MemoryBudget, estimated_bytes


def document_key(document: dict[str, Any], primary_key: str) -> str:
    return json.dumps(document.get(primary_key), sort_keys=True)


class TableState:
    """The position ``(epoch, seq)``, the last ``history_size`` change messages, and a
    mirror of the documents (``None`` for a table larger than ``snapshot_limit``).

    With a ``budget`` (CHANGEFLOW_MEMORY_BUDGET, ``memory_budget.py``), the bytes
    of both count against the memory of all tables together: the budget may drop
    the oldest changes kept, or the mirror."""

    def __init__(
        self,
        primary_key: str,
        history_size: int,
        snapshot_limit: int,
        *,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.primary_key = primary_key
        self.history_size = max(history_size, 0)
        self.snapshot_limit = snapshot_limit
        self.budget = budget or MemoryBudget(None)
        self.budget.join(self)
        self.epoch: str | None = None
        self.seq = 0
        self.history: deque[dict[str, Any]] = deque()
        self._sizes: deque[int] = deque()  # estimated bytes of each change in history
        self.mirror: dict[str, dict[str, Any]] | None = None
        self._mirror_sizes: dict[str, int] = {}
        self.mirror_bytes = 0

    def reset(self, epoch: str, *, mirrored: bool) -> None:
        """A new epoch: the old changes and documents no longer describe it."""
        self.forget()
        self.epoch = epoch
        self.seq = 0
        self.mirror = {} if mirrored else None

    def forget(self) -> None:
        """Keep nothing (the feed ended, or a new epoch begins)."""
        while self.history:
            self.drop_oldest()
        self.drop_mirror()

    def load(self, document: dict[str, Any]) -> None:
        """A document that was there when the feed opened (not a change)."""
        self._put(document)

    def record(self, message: dict[str, Any]) -> None:
        """One change message, numbered by the feed."""
        self.seq = message["seq"]
        change = message["change"]
        if self.history_size:
            if len(self.history) >= self.history_size:
                self.drop_oldest()
            size = estimated_bytes(change)
            self.history.append(message)
            self._sizes.append(size)
            assert self.epoch is not None  # set by reset before any change
            self.budget.kept_change(self, self.epoch, self.seq, size)
        if change["type"] == "remove":
            if self.mirror is not None and change["old_val"] is not None:
                key = document_key(change["old_val"], self.primary_key)
                if self.mirror.pop(key, None) is not None:
                    self._resized(-self._mirror_sizes.pop(key, 0))
        elif change["new_val"] is not None:
            self._put(change["new_val"])

    def _put(self, document: dict[str, Any]) -> None:
        if self.mirror is None:
            return
        key = document_key(document, self.primary_key)
        self.mirror[key] = document
        if len(self.mirror) > self.snapshot_limit:
            self.drop_mirror()  # grown past the limit: snapshots are read from RethinkDB now
            return
        size = estimated_bytes(document)
        grown = size - self._mirror_sizes.get(key, 0)
        self._mirror_sizes[key] = size
        self._resized(grown)  # last: the budget may drop this mirror

    def _resized(self, change: int) -> None:
        self.mirror_bytes += change
        self.budget.grew(change)

    # -- memory_budget.Holder --------------------------------------------------------

    def holds(self, epoch: str, seq: int) -> bool:
        return epoch == self.epoch and bool(self.history) and self.history[0]["seq"] == seq

    def drop_oldest(self) -> None:
        self.history.popleft()
        self.budget.dropped_change(self._sizes.popleft())

    def drop_mirror(self) -> None:
        """Snapshots of this table are read from RethinkDB (until the next epoch)."""
        self.mirror = None
        self._mirror_sizes = {}
        if self.mirror_bytes:
            self.budget.grew(-self.mirror_bytes)
            self.mirror_bytes = 0

    def changes_since(self, seq: int) -> list[dict[str, Any]] | None:
        """The changes after ``seq`` of this epoch, or None when the history no longer has them."""
        if seq == self.seq:
            return []
        if seq > self.seq:
            return None
        if not self.history or self.history[0]["seq"] > seq + 1:
            return None
        return [message for message in self.history if message["seq"] > seq]

    def documents(self) -> list[dict[str, Any]] | None:
        return None if self.mirror is None else list(self.mirror.values())


def sync_answer(request: SyncRequest, state: TableState | None) -> dict[str, Any]:
    """The ``changeflow.sync.result`` for ``request`` given what the worker holds.

    ``state`` is None for a table not followed (not there yet): its position is
    ``(None, 0)``. A snapshot is filled in here when the documents are in memory.
    """
    epoch = state.epoch if state is not None else None
    seq = state.seq if state is not None else 0
    answer: dict[str, Any] = {
        "type": SYNC_RESULT_TYPE,
        "id": request.id,
        "database": request.database,
        "table": request.table,
        "epoch": epoch,
        "seq": seq,
        "changes": None,
        "resync": None,
        "snapshot": None,
    }
    if request.since is not None:
        since_epoch, since_seq = request.since
        if since_epoch != epoch:
            answer["resync"] = "epoch_changed"
        elif state is None:
            answer["changes"] = [] if since_seq == 0 else None
            answer["resync"] = None if since_seq == 0 else "no_position"
        elif since_seq > seq:
            answer["resync"] = "no_position"
        else:
            changes = state.changes_since(since_seq)
            if changes is None:
                answer["resync"] = "history_exceeded"
            else:
                answer["changes"] = changes
    wants_snapshot = request.snapshot and (request.since is None or answer["resync"] is not None)
    if wants_snapshot:
        if state is None:
            answer["snapshot"] = {"documents": [], "truncated": False}
        else:
            documents = state.documents()
            if documents is not None:
                answer["snapshot"] = {"documents": documents, "truncated": False}
    return answer
