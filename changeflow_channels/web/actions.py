"""What a subscription asks its consumer to do: the actions its events return
(``web/subscriptions.py``), performed in order by ``web/delivery.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Position = tuple[str | None, int]


@dataclass(slots=True)
class Deliver:
    """Send this change message as the subscription sees it (row rule, filter).
    A replayed change (not ``live``) stays out of the send lag metric."""

    message: dict[str, Any]
    live: bool = True


@dataclass(slots=True)
class Resync:
    """Tell the client what it holds may miss changes (``reason``)."""

    reason: str


@dataclass(slots=True)
class Snapshot:
    """Send the table's documents (as the subscription sees them), exactly at
    ``(epoch, seq)``."""

    documents: list[dict[str, Any]]
    truncated: bool
    epoch: str | None
    seq: int


@dataclass(slots=True)
class RequestSync:
    """Send the sync request ``request_id`` to the worker (again, when resent)."""

    request_id: str
    since: Position | None
    snapshot: bool


@dataclass(slots=True)
class RetrySyncLater:
    """After ``delay`` seconds, call ``retry_due(request_id)``."""

    request_id: str
    delay: float


@dataclass(slots=True)
class TimeOutLater:
    """After ``delay`` seconds, call ``timed_out(request_id)``."""

    request_id: str
    delay: float


@dataclass(slots=True)
class CancelTimers:
    """Cancel the timers of request ``request_id``: its resend and (unless
    ``keep_timeout``) its timeout."""

    request_id: str
    keep_timeout: bool = False


Action = Deliver | Resync | Snapshot | RequestSync | RetrySyncLater | TimeOutLater | CancelTimers
