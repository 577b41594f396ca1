"""Sync requests: a consumer asks the worker for missed changes or a snapshot.

See docs/protocol.md ("Sync request and result"). The worker's answer is built
by ``worker.table_state.sync_answer``, and sent in pages of a bounded size
(``answer_pages``); the consumer puts them back together (``SyncPages``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

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


# A frame's ``cursor`` is far shorter (web/positions.py); longer is not one.
MAX_CURSOR_CHARS = 256


@dataclass(frozen=True)
class ClientSince:
    """A client's ``since``: its position, and the ``cursor`` of the frame it
    resumes after, when it had one (subscriptions under a row rule)."""

    position: tuple[str | None, int]
    cursor: str | None = None


def parse_client_since(since: Any) -> ClientSince | None:
    """A subscribe frame's ``since``: ``{"epoch": ..., "seq": ..., "cursor": ...}``
    (``cursor`` optional); raises ``SyncError`` when malformed."""
    position = parse_since(since)
    if position is None:
        return None
    cursor = since.get("cursor")
    if cursor is not None and (
        not isinstance(cursor, str) or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii()
    ):
        raise SyncError("since.cursor must be the cursor of a frame (a short string)")
    return ClientSince(position, cursor)


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


# -- Answers in pages -------------------------------------------------------------

# What a page costs besides its changes or documents (its header), in bytes.
PAGE_HEADER_BYTES = 512


def _size(item: Any) -> int:
    return len(orjson.dumps(item, default=str))


def answer_pages(answer: dict[str, Any], max_bytes: int) -> Iterator[dict[str, Any]]:
    """``answer`` as it is when its changes and documents fit in ``max_bytes``
    (about: serialized as JSON), else in pages that each do: the same header
    (``id``, ``epoch``, ``seq``, ``resync``...) with ``part`` (0, 1, ...) and ``last``
    (true on the final one), and consecutive slices of ``changes`` and of
    ``snapshot.documents``. One item larger than ``max_bytes`` gets a page of its
    own. ``join_pages`` puts them back together."""
    changes = answer.get("changes") or []
    snapshot = answer.get("snapshot")
    documents = snapshot["documents"] if snapshot is not None else []
    items = [("changes", item) for item in changes] + [("documents", item) for item in documents]
    sizes = [_size(item) for _, item in items]
    budget = max(max_bytes - PAGE_HEADER_BYTES, 1)
    if sum(sizes) <= budget:
        yield answer
        return
    slices: list[list[tuple[str, Any]]] = [[]]
    used = 0
    for item, size in zip(items, sizes, strict=True):
        if slices[-1] and used + size > budget:
            slices.append([])
            used = 0
        slices[-1].append(item)
        used += size
    for part, chunk in enumerate(slices):
        page = {**answer, "part": part, "last": part == len(slices) - 1}
        if answer.get("changes") is not None:
            page["changes"] = [item for kind, item in chunk if kind == "changes"]
        if snapshot is not None:
            page["snapshot"] = {
                **snapshot,
                "documents": [item for kind, item in chunk if kind == "documents"],
            }
        yield page


def join_pages(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``changeflow.sync.result`` from its pages: their ``changes`` and their
    snapshot's ``documents`` one after the other."""
    whole = {key: value for key, value in parts[0].items() if key not in ("part", "last")}
    if whole.get("changes") is not None:
        whole["changes"] = [change for part in parts for change in part["changes"] or []]
    if whole.get("snapshot") is not None:
        whole["snapshot"] = {
            "documents": [document for part in parts for document in part["snapshot"]["documents"]],
            "truncated": any(part["snapshot"]["truncated"] for part in parts),
        }
    return whole


@dataclass
class SyncPages:
    """The pages of one answer received so far (the consumer's side)."""

    parts: list[dict[str, Any]] = field(default_factory=list)

    def add(self, page: dict[str, Any]) -> dict[str, Any] | None:
        """The whole answer once ``page`` completes it, else None. An answer
        without ``part`` comes whole. A page already had (a repeat, or a page of
        another answer to the same request, when it was resent) is ignored; a page
        missing (a full channel drops messages) drops the pages so far: the
        request's next resend brings the whole answer again."""
        part = page.get("part")
        if part is None:
            return page
        if not isinstance(part, int) or part < len(self.parts):
            return None
        first = self.parts[0] if self.parts else page
        if part == len(self.parts) and (page.get("epoch"), page.get("seq")) == (
            first.get("epoch"),
            first.get("seq"),
        ):
            self.parts.append(page)
        else:
            self.parts = []
            return None
        if not page.get("last"):
            return None
        parts, self.parts = self.parts, []
        return join_pages(parts)

    def clear(self) -> None:
        self.parts = []
