"""System checks of what surrounds the settings: the channel layer (``CHANNEL_LAYERS``),
Daphne's frame limits and the ASGI application's websocket wiring. Their ids are listed
with the others in ``checks.py``."""

from __future__ import annotations

from django.conf import settings

from .check_messages import Messages, check_error, check_warning
from .conf import ChangeflowSettings
from .frame_limits import DAPHNE_DEFAULT_MAX_SIZE, limit_problems
from .redis_layer import changeflow_redis_host
from .setting_kinds import is_valid

LAYER_BACKEND = "changeflow_channels.redis_layer.RedisChannelLayer"
PLAIN_REDIS_BACKEND = "channels_redis.core.RedisChannelLayer"
REDIS_BACKENDS = (
    LAYER_BACKEND,
    PLAIN_REDIS_BACKEND,
    "channels_redis.pubsub.RedisPubSubChannelLayer",
)
PUBSUB_BACKEND = "channels_redis.pubsub.RedisPubSubChannelLayer"


def check_channel_layers(conf: ChangeflowSettings) -> Messages:
    """``CHANNEL_LAYERS``: there is one, Redis hosts without a socket timeout, the pub/sub layer."""
    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    default = layers.get("default")
    if not default:
        return [
            check_error(
                "E004",
                "No channel layer is configured: changeflow_channels needs one to carry changes and pushes.",
                'Set CHANNEL_LAYERS = {"default": {"BACKEND": "changeflow_channels.redis_layer.RedisChannelLayer", '
                '"CONFIG": {"hosts": [{"address": "redis://127.0.0.1:6379", "socket_timeout": None}]}}}.',
            )
        ]
    messages: Messages = []
    backend = default.get("BACKEND")
    hosts = (default.get("CONFIG") or {}).get("hosts") or ["redis://localhost:6379"]
    if backend in REDIS_BACKENDS and not all(
        isinstance(host, dict) and "socket_timeout" in host for host in hosts
    ):
        messages.append(
            check_warning(
                "W001",
                "The Redis channel layer uses redis-py's default socket_timeout (5 s): an idle "
                "receive() then raises TimeoutError, which ends ordinary consumers and workers "
                "(channels_redis #422). changeflow_channels' own consumers survive it.",
                'Give each host a dict with "socket_timeout": None, for example '
                '"hosts": [{"address": "redis://127.0.0.1:6379", "socket_timeout": None}].',
            )
        )
    if backend == PLAIN_REDIS_BACKEND:
        messages.append(
            check_warning(
                "W007",
                "channels_redis's RedisChannelLayer raises MaxConnectionsError beyond 100 "
                "commands at once (a burst of clients subscribing), and after a Redis restart "
                "the first command on each of its pooled connections fails.",
                f'Use "BACKEND": "{LAYER_BACKEND}" (the same layer, with a blocking pool '
                "that reconnects once).",
            )
        )
    if backend == PUBSUB_BACKEND:
        messages.append(
            check_warning(
                "W003",
                "channels_redis's pub/sub layer hands a message sent to a channel to every "
                "process reading it: with several changeflow workers, each would write each push.",
                "Run one worker with this layer, or use channels_redis.core.RedisChannelLayer "
                "to run several.",
            )
        )
    return messages


def check_lease_replicas(conf: ChangeflowSettings) -> Messages:
    """W010: leases on a Sentinel master that no replica must acknowledge."""
    if conf.redis is not None and not is_valid("redis", conf.redis):
        return []  # E007
    try:
        host = changeflow_redis_host("default", conf.redis)
    except ValueError:  # "hosts" not a list: channels_redis refuses the layer itself
        return []
    sentinel = isinstance(host, dict) and "master_name" in host
    if not sentinel or conf.lease_replicas != 0:
        return []
    return [
        check_warning(
            "W010",
            "The leases live on a Redis Sentinel master and CHANGEFLOW_LEASE_REPLICAS is 0: "
            "a failover loses the lease writes its replica had not received, and two workers "
            "may then follow one table (its changes sent twice) until the next renewal.",
            "With two replicas or more set CHANGEFLOW_LEASE_REPLICAS = 1; with one worker "
            "only, silence changeflow_channels.W010.",
        )
    ]


def check_frame_limits(conf: ChangeflowSettings) -> Messages:
    """The frame limits against Daphne's defaults (``changeflow_channels.serve`` checks
    them against the values it runs with)."""
    size = DAPHNE_DEFAULT_MAX_SIZE
    return [
        check_warning(
            "W009",
            f"{problem} Daphne's default limits are {size} bytes.",
            "Start Daphne (python -m changeflow_channels.serve) with --websocket-max-message-size "
            "and --websocket-max-frame-size above CHANGEFLOW_MAX_FRAME_BYTES and at least "
            "CHANGEFLOW_MAX_SENT_FRAME_BYTES, then silence this warning; or lower the settings.",
        )
        for problem in limit_problems(conf, size, size)
    ]


def check_wiring(conf: ChangeflowSettings) -> Messages:
    """W008: ASGI_APPLICATION's websockets behind channels' host-name-only origin check,
    or behind none (an application that cannot be imported is not inspected)."""
    from django.utils.module_loading import import_string

    from .asgi import old_origin_validators, wrapped_validators

    path = getattr(settings, "ASGI_APPLICATION", None)
    try:
        application = import_string(path) if isinstance(path, str) else None
    except Exception:  # the project's own module; runserver and Daphne report its errors
        return []
    if application is None:
        return []
    old = old_origin_validators(application)
    hint = (
        'Use "websocket": changeflow_channels.asgi.websocket_application() (exact origins, '
        "tokens for scripts): see the README's asgi.py."
    )
    if old:
        return [
            check_warning(
                "W008",
                f"ASGI_APPLICATION ({path}) checks websocket origins with channels' "
                f"{', '.join(old)}, which compares host names only: a page on another port "
                "or scheme of the same host can use a logged-in user's session.",
                hint,
            )
        ]
    if wrapped_validators(application) == 0:
        return [
            check_warning(
                "W008",
                f"ASGI_APPLICATION ({path}) checks no websocket origins "
                "(no ChangeflowOriginValidator found): any web page can use a logged-in "
                "user's session.",
                hint,
            )
        ]
    return []
