"""Sync requests: a consumer asks the worker for missed changes or a snapshot.

See docs/protocol.md ("Sync request and result"). The worker's answer is built
by ``worker.table_state.sync_answer``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jsonsafe import is_unicode
from .names import InvalidName, stream_name

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
