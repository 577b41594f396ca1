"""All of changeflow_channels' settings, read in one place.

Each setting is a flat ``CHANGEFLOW_*`` name in Django settings: the field
``send_queue`` is ``CHANGEFLOW_SEND_QUEUE``. The fields below give each one's
type and default. ``get_settings()`` reads them fresh every call (cheap), so
tests can use ``override_settings``. Nothing else in the package reads
``settings.CHANGEFLOW_*``; ``changeflow_channels.checks`` checks every one.

The types say what a valid value is; ``get_settings()`` does not enforce them
(``manage.py check`` does, and says what is wrong).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings

PREFIX = "CHANGEFLOW_"


@dataclass(frozen=True)
class ChangeflowSettings:
    # Server and tables.
    rethinkdb: str = "rethinkdb://admin@localhost:28015"
    watch: list[str] = field(default_factory=lambda: ["*"])
    channel: str = "changeflow"
    handlers: list[str] = field(default_factory=list)
    verbose: bool = True
    # Who may do what.
    permissions: Any = "changeflow_channels.permissions.AuthenticatedReadPolicy"
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    recheck_every: float = 30.0
    # Seconds a re-check may keep failing (user or policy unreachable) before the
    # subscriptions end (``unavailable``): it fails closed.
    recheck_grace: float = 30.0
    token_max_age: float | timedelta = 24 * 3600
    # Websockets open at once per token, and per user among token connections.
    token_connections: int = 20
    # Origins allowed to open websockets ("scheme://host[:port]"); None: the site's own.
    allowed_origins: list[str] | None = None
    # Time limits, seconds.
    handler_timeout: float = 10.0
    push_timeout: float = 10.0
    sync_timeout: float = 10.0
    # Pushes with one idempotency key into one table within this time are written once.
    idempotency_window: float = 24 * 3600.0
    # What the worker keeps per table.
    history: int = 1000
    snapshot_limit: int = 1000
    # Changes RethinkDB holds for a feed the worker has not read yet; past it the
    # server drops changes and the feed restarts in a new epoch (RethinkDB's default).
    feed_queue_size: int = 100_000
    # Many tables (issue 17): the connections all feeds share, and the bytes the
    # histories and mirrors of all tables may take together (None: no bound).
    feed_connections: int | None = None
    memory_budget: int | None = 256 * 1024 * 1024
    # Keys, indexes and autoclean.
    tables: dict[str, Any] = field(default_factory=dict)
    clean_every: float = 60.0
    # Django models in the flow.
    models: dict[str, Any] = field(default_factory=dict)
    models_db: str = "django"
    # Per-connection limits.
    max_subscriptions: int = 100
    max_frame_bytes: int = 65536
    push_rate: float = 20.0
    # Subscribe frames per second (bursts of twice that), resubscribing included; those
    # asking for a snapshot or resuming (``since``) also spend one of sync_rate a second,
    # bursts of sync_burst: each makes the worker read and send a table or its history.
    subscribe_rate: float = 10.0
    sync_rate: float = 1.0
    sync_burst: int = 5
    max_document_bytes: int = 1048576
    send_queue: int = 1000
    send_queue_bytes: int = 16 * 1024 * 1024
    # What is sent: the largest frame (below Daphne's 1 MiB), and the window of frames
    # (and bytes) sent to a client and not yet acknowledged (``ack``).
    max_sent_frame_bytes: int = 1_000_000
    send_window: int = 256
    send_window_bytes: int = 2 * 1024 * 1024
    # Batches of changes.
    batch_size: int = 1000
    batch_bytes: int = 262144
    # Several workers, metrics.
    lease_time: float = 10.0
    # Redis replicas that must acknowledge a lease taken or renewed (WAIT): 0, or 1 with
    # Sentinel and two replicas or more (docs/deployment.md).
    lease_replicas: int = 0
    # A Redis URL, or a Sentinel host (channels_redis's form: sentinels, master_name).
    redis: str | dict[str, Any] | None = None
    metrics_port: int | None = None
    metrics_per_table: bool = True


def setting_name(attribute: str) -> str:
    """``"send_queue"`` -> ``"CHANGEFLOW_SEND_QUEUE"``."""
    return PREFIX + attribute.upper()


def defaults() -> dict[str, Any]:
    """Every setting's name (``CHANGEFLOW_*``) and default value (a fresh copy)."""
    return {setting_name(f.name): _default(f) for f in dataclasses.fields(ChangeflowSettings)}


def get_settings() -> ChangeflowSettings:
    """The current settings, defaults filled in."""
    values = {}
    for f in dataclasses.fields(ChangeflowSettings):
        value = getattr(django_settings, setting_name(f.name), dataclasses.MISSING)
        values[f.name] = _default(f) if value is dataclasses.MISSING else value
    return ChangeflowSettings(**values)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default
