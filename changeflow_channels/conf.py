"""All of changeflow_channels' settings, read in one place.

Each setting is a flat ``CHANGEFLOW_*`` name in Django settings; ``get_settings()``
reads them fresh every call (cheap), so tests can use ``override_settings``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings as django_settings

DEFAULTS: dict[str, Any] = {
    "RETHINKDB": "rethinkdb://admin@localhost:28015",
    "WATCH": ["*"],
    "CHANNEL": "changeflow",
    "HANDLERS": [],
    "VERBOSE": True,
    "PERMISSIONS": "changeflow_channels.permissions.AuthenticatedReadPolicy",
    "HANDLER_TIMEOUT": 10.0,
    "PUSH_TIMEOUT": 10.0,
    "HISTORY": 1000,
    "SNAPSHOT_LIMIT": 1000,
    "SYNC_TIMEOUT": 10.0,
    "TABLES": {},
    "CLEAN_EVERY": 60.0,
    "MODELS": {},
    "MODELS_DB": "django",
    "MAX_SUBSCRIPTIONS": 100,
    "MAX_FRAME_BYTES": 65536,
    "PUSH_RATE": 20.0,
    "MAX_DOCUMENT_BYTES": 1048576,
    "RECHECK_EVERY": 30.0,
    "SEND_QUEUE": 1000,
    "SEND_QUEUE_BYTES": 16 * 1024 * 1024,
    "BATCH_SIZE": 1000,
    "BATCH_BYTES": 262144,
    "LEASE_TIME": 10.0,
    "REDIS": None,
    "METRICS_PORT": None,
    "METRICS_PER_TABLE": True,
}


@dataclass(frozen=True)
class ChangeflowSettings:
    rethinkdb: str
    watch: list[str]
    channel: str
    handlers: list[str]
    verbose: bool
    permissions: Any
    handler_timeout: float
    push_timeout: float
    history: int
    snapshot_limit: int
    sync_timeout: float
    tables: dict[str, Any]
    clean_every: float
    models: dict[str, Any]
    models_db: str
    max_subscriptions: int
    max_frame_bytes: int
    push_rate: float
    max_document_bytes: int
    recheck_every: float
    send_queue: int
    send_queue_bytes: int
    batch_size: int
    batch_bytes: int
    lease_time: float
    redis: str | None
    metrics_port: int | None
    metrics_per_table: bool


def get_settings() -> ChangeflowSettings:
    """The current settings, defaults filled in."""
    values = {
        name.lower(): getattr(django_settings, f"CHANGEFLOW_{name}", default)
        for name, default in DEFAULTS.items()
    }
    return ChangeflowSettings(**values)
