"""System checks (``manage.py check``) for the CHANGEFLOW_* settings."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from .conf import get_settings
from .hooks import HandlerError, handler_modules, load_handler
from .names import InvalidName
from .permissions import AllowAllPolicy, load_policy
from .rethinkdb_url import parse_rethinkdb_url
from .watch import check_pattern

REDIS_BACKENDS = (
    "channels_redis.core.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer",
)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
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
