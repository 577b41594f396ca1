"""Sync requests: a consumer asks the worker for missed changes or a snapshot.

See docs/protocol.md ("Sync request and result"). ``sync_answer`` is pure: it
reads a ``TableState`` without awaiting, so its answer is exact at one
``(epoch, seq)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jsonsafe import is_unicode
from .names import InvalidName, stream_name
from .table_state import TableState

SYNC_TYPE = "changeflow.sync"
SYNC_RESULT_TYPE = "changeflow.sync.result"


def sync_channel(push_channel: str) -> str:
    """Sync requests have a channel of their own: they must not queue behind pushes."""
    return f"{push_channel}.sync"


class SyncError(ValueError):
    """A malformed sync request."""


@dataclass(frozen=True)
class SyncRequest:
    database: str
    table: str
    reply_channel: str
    id: Any
    since: tuple[str | None, int] | None
    snapshot: bool

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"


def parse_since(since: Any) -> tuple[str | None, int] | None:
    """``{"epoch": ..., "seq": ...}`` as a tuple; raises ``SyncError`` when malformed."""
    if since is None:
        return None
    if not isinstance(since, dict):
        raise SyncError('since must be an object {"epoch": ..., "seq": ...}')
    epoch, seq = since.get("epoch"), since.get("seq")
    if epoch is not None and (
        not isinstance(epoch, str) or len(epoch) > 64 or not is_unicode(epoch)
    ):
        raise SyncError("since.epoch must be a string (or null)")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**53:
        raise SyncError("since.seq must be a whole number, 0 or more")
    return epoch, seq


def parse_sync(message: dict[str, Any]) -> SyncRequest:
    try:
        stream_name(message.get("database"), message.get("table"))
    except InvalidName as error:
        raise SyncError(str(error)) from None
    reply_channel = message.get("reply_channel")
    if not isinstance(reply_channel, str) or not reply_channel:
        raise SyncError("a sync request needs a reply_channel")
    return SyncRequest(
        database=message["database"],
        table=message["table"],
        reply_channel=reply_channel,
        id=message.get("id"),
        since=parse_since(message.get("since")),
        snapshot=bool(message.get("snapshot")),
    )


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
