"""System checks (``manage.py check``) for the CHANGEFLOW_* settings."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import get_settings
from .names import InvalidName
from .permissions import AllowAllPolicy, load_policy
from .rethinkdb_url import parse_rethinkdb_url

REDIS_BACKENDS = (
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
)
PUBSUB_BACKEND = "channels_redis.pubsub.RedisPubSubChannelLayer"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Below this, a busy machine makes workers give up tables they still hold.
SHORT_LEASE_TIME = 3.0


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    # Imported here: loading the app (Daphne too) imports this module, and must
    # not load the worker.
    from .worker.hooks import HandlerError, handler_modules, load_handler
    from .worker.watch import check_pattern

    conf = get_settings()
    messages: list[Any] = []
    try:
        parse_rethinkdb_url(conf.rethinkdb)
    except ValueError as error:
        messages.append(
            Error(
                f"CHANGEFLOW_RETHINKDB is not a valid server URL: {error}.",
                hint='Use "rethinkdb://[user[:password]@]host[:port]" (rethinkdbs:// for TLS).',
                id="changeflow_channels.E001",
            )
        )
    if not isinstance(conf.watch, list | tuple):
        messages.append(
            Error(
                "CHANGEFLOW_WATCH must be a list of patterns.",
                hint='For example ["*"], ["shop.*"] or ["shop.orders"].',
                id="changeflow_channels.E002",
            )
        )
    else:
        for pattern in conf.watch:
            try:
                check_pattern(pattern)
            except InvalidName as error:
                messages.append(
                    Error(
                        f"CHANGEFLOW_WATCH: {error}.",
                        hint='Patterns are "*", "db.*" or "db.table", with names of A-Z, a-z, 0-9, _ and -.',
                        id="changeflow_channels.E002",
                    )
                )
    for module in handler_modules(conf.handlers, os.environ.get("DJANGO_SETTINGS_MODULE")):
        try:
            load_handler(module)
        except HandlerError as error:
            messages.append(
                Error(
                    f"CHANGEFLOW_HANDLERS: {error}.",
                    hint="Each module must import cleanly and define flow_handlers(database, table, change).",
                    id="changeflow_channels.E003",
                )
            )
    messages.extend(_check_channel_layer())
    messages.extend(_check_permissions(conf.permissions))
    messages.extend(_check_workers(conf.lease_time, conf.redis, conf.metrics_port))
    return messages


def _check_channel_layer() -> list[Any]:
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    default = layers.get("default")
    if not default:
        return [
            Error(
                "No channel layer is configured: changeflow_channels needs one to carry changes and pushes.",
                hint='Set CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", '
                '"CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379", "socket_timeout": None}]}}}.',
                id="changeflow_channels.E004",
            )
        ]
    if default.get("BACKEND") not in REDIS_BACKENDS:
        return []
    hosts = (default.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    if all(isinstance(host, dict) and "socket_timeout" in host for host in hosts):
        return []
    return [
        Warning(
            "The Redis channel layer uses redis-py's default socket_timeout (5 s): an idle "
            "receive() then raises TimeoutError, which ends ordinary consumers and workers "
            "(channels_redis #422). changeflow_channels' own consumers survive it.",
            hint='Give each host a dict with "socket_timeout": None, for example '
            '"hosts": [{"address": "redis://127.0.0.1:6379", "socket_timeout": None}].',
            id="changeflow_channels.W001",
        )
    ]


def _check_permissions(setting: Any) -> list[Any]:
    try:
        policy = load_policy(setting)
    except Exception as error:
        return [
            Error(
                f"CHANGEFLOW_PERMISSIONS cannot be used: {error}.",
                hint="Name a class or object with can_subscribe(user, stream) and can_push(user, stream, op).",
                id="changeflow_channels.E005",
            )
        ]
    if isinstance(policy, AllowAllPolicy) and not settings.DEBUG:
        return [
            Warning(
                "CHANGEFLOW_PERMISSIONS allows anyone to read and write every stream.",
                hint="AllowAllPolicy is for demos on loopback; use a real policy in production.",
                id="changeflow_channels.W002",
            )
        ]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_workers(lease_time: Any, redis_url: Any, metrics_port: Any) -> list[Any]:
    """The settings of several workers (leases) and of the worker's metrics endpoint."""
    messages: list[Any] = []
    if not _is_number(lease_time) or not lease_time > 0:
        messages.append(
            Error(
                f"CHANGEFLOW_LEASE_TIME must be a positive number of seconds, not {lease_time!r}.",
                hint="10.0 (the default) suits most setups; see the README's 'Several workers'.",
                id="changeflow_channels.E006",
            )
        )
    elif lease_time < SHORT_LEASE_TIME:
        messages.append(
            Warning(
                f"CHANGEFLOW_LEASE_TIME = {lease_time:g} s: a worker whose event loop or Redis "
                "stalls for two thirds of it gives up its tables (a new epoch, a resync).",
                hint=f"Use at least {SHORT_LEASE_TIME:g} s outside tests.",
                id="changeflow_channels.W004",
            )
        )
    if redis_url is not None and not (
        isinstance(redis_url, str) and redis_url.startswith(REDIS_SCHEMES)
    ):
        messages.append(
            Error(
                f"CHANGEFLOW_REDIS must be a Redis URL or None, not {redis_url!r}.",
                hint='For example "redis://127.0.0.1:6379/0"; None uses the channel layer\'s Redis.',
                id="changeflow_channels.E007",
            )
        )
    if metrics_port is not None and not (
        isinstance(metrics_port, int)
        and not isinstance(metrics_port, bool)
        and 0 <= metrics_port <= 65535
    ):
        messages.append(
            Error(
                f"CHANGEFLOW_METRICS_PORT must be a TCP port number or None, not {metrics_port!r}.",
                hint="For example 9108; None serves no metrics from the worker.",
                id="changeflow_channels.E008",
            )
        )
    default = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default") or {}
    if default.get("BACKEND") == PUBSUB_BACKEND:
        messages.append(
            Warning(
                "channels_redis's pub/sub layer hands a message sent to a channel to every "
                "process reading it: with several changeflow workers, each would write each push.",
                hint="Run one worker with this layer, or use channels_redis.core.RedisChannelLayer "
                "to run several.",
                id="changeflow_channels.W003",
            )
        )
    return messages
