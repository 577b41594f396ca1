"""What each single-value ``CHANGEFLOW_*`` setting must be: a kind (seconds, a count, a
flag, a port...) and what the setting is (or a hint of its own), for ``checks`` to report
a bad value the same way whichever setting it is: "<setting> must be <kind>, not <value>"."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Channel names are below 100 characters; the worker's own sync channels add
# ".sync.<12 hex digits>" to CHANGEFLOW_CHANNEL.
MAX_CHANNEL_LENGTH = 80
CHANNEL_RE = re.compile(r"[A-Za-z0-9_.-]+")


def is_sentinel_host(value: Any) -> bool:
    """A channels_redis host naming a Sentinel master: ``{"sentinels": [(host, port), ...],
    "master_name": name}`` (more keys: redis-py's connection options, ``sentinel_kwargs``)."""
    if not isinstance(value, dict) or "address" in value:
        return False
    name, sentinels = value.get("master_name"), value.get("sentinels")
    return (
        isinstance(name, str)
        and bool(name)
        and isinstance(sentinels, list | tuple)
        and bool(sentinels)
        and all(
            isinstance(s, list | tuple)
            and len(s) == 2
            and isinstance(s[0], str)
            and is_integer(s[1])
            for s in sentinels
        )
    )


def is_redis(value: Any) -> bool:
    """``CHANGEFLOW_REDIS``: None, a Redis URL, or a Sentinel host."""
    if value is None or is_sentinel_host(value):
        return True
    return isinstance(value, str) and value.startswith(REDIS_SCHEMES)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_positive_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value) and value > 0


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# kind: (is it valid, what it must be)
KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seconds": (is_positive_number, "a positive number of seconds"),
    "positive": (is_positive_number, "a positive number"),
    "count": (lambda v: is_integer(v) and v > 0, "a positive integer"),
    "count0": (lambda v: is_integer(v) and v >= 0, "an integer of at least 0"),
    "count_or_none": (
        lambda v: v is None or (is_integer(v) and v > 0),
        "a positive integer or None",
    ),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "age": (
        lambda v: is_positive_number(v) or (isinstance(v, timedelta) and v > timedelta(0)),
        "a positive number of seconds",
    ),
    "channel": (
        lambda v: (
            isinstance(v, str) and bool(CHANNEL_RE.fullmatch(v)) and len(v) <= MAX_CHANNEL_LENGTH
        ),
        "a channel name",
    ),
    "redis": (is_redis, "a Redis URL, a Sentinel host or None"),
    "port": (
        lambda v: v is None or (is_integer(v) and 0 <= v <= 65535),
        "a TCP port number or None",
    ),
}

# attribute: (id, kind, what it is)
PLAIN: dict[str, tuple[str, str, str]] = {
    "verbose": ("E028", "bool", "whether every change and push is logged at INFO"),
    "handler_timeout": ("E029", "seconds", "the seconds one hook call may take"),
    "push_timeout": ("E030", "seconds", "the seconds a push is retried while RethinkDB is away"),
    "history": ("E031", "count0", "the changes kept per table to fill gaps (0: none)"),
    "snapshot_limit": ("E032", "count", "the largest table kept in memory for exact snapshots"),
    "feed_queue_size": (
        "E053",
        "count",
        "the changes RethinkDB queues for a feed not read yet (changefeed_queue_size)",
    ),
    # E060, E061: many tables (issue 17)
    "feed_connections": (
        "E060",
        "count_or_none",
        "the connections to RethinkDB the feeds of all tables share (None: one per table)",
    ),
    "memory_budget": (
        "E061",
        "count_or_none",
        "the bytes the histories and mirrors of all tables may take together (None: no bound)",
    ),
    "recheck_every": ("E034", "seconds", "the seconds between permission re-checks"),
    "recheck_grace": (
        "E056",
        "seconds",
        "the seconds a failing permission re-check keeps subscriptions before ending them",
    ),
    "token_connections": (
        "E055",
        "count",
        "the most websockets open at once per token, and per user among token connections",
    ),
    "max_frame_bytes": ("E036", "count", "the largest frame a client may send, in bytes"),
    "max_subscriptions": ("E037", "count", "the most subscriptions per connection"),
    "push_rate": ("E038", "positive", "the pushes per second a connection may make"),
    "subscribe_rate": (
        "E057",
        "positive",
        "the subscribe frames per second a connection may send (bursts of twice that)",
    ),
    "sync_rate": (
        "E058",
        "positive",
        "the snapshots and resumes (since) per second a connection may ask for",
    ),
    "sync_burst": (
        "E059",
        "count",
        "the snapshots and resumes (since) a connection may ask for at once",
    ),
    "max_document_bytes": ("E039", "count", "the largest pushed data, in bytes of JSON"),
    "send_queue": ("E040", "count", "the most frames waiting for a slow client"),
    "send_queue_bytes": ("E041", "count", "the most bytes waiting for a slow client"),
    "batch_size": ("E042", "count", "the most changes of a table in one batch message"),
    "batch_bytes": ("E043", "count", "about the largest batch message, in bytes"),
    "sync_timeout": ("E044", "seconds", "the seconds a consumer waits for a sync answer"),
    "metrics_per_table": ("E045", "bool", "whether each table has its own metrics label"),
    "idempotency_window": (
        "E046",
        "seconds",
        "the seconds a push's idempotency key is remembered (one write per key and table)",
    ),
    "max_sent_frame_bytes": (
        "E050",
        "count",
        "the largest frame sent to a client, in bytes (keep it below the ASGI server's limit)",
    ),
    "send_window": ("E051", "count", "the most frames sent to a client and not acknowledged"),
    "send_window_bytes": (
        "E052",
        "count",
        "about the most bytes sent to a client and not acknowledged",
    ),
    "clean_every": ("E016", "seconds", "the seconds between two autoclean rounds"),
    "lease_time": ("E006", "seconds", "the seconds a worker's lease on a table lasts"),
    "lease_replicas": (
        "E062",
        "count0",
        "the Redis replicas that must acknowledge a lease taken or renewed (0: none)",
    ),
}


# attribute: (id, kind, hint), for values whose hint is an example rather than the default.
HINTED: dict[str, tuple[str, str, str]] = {
    "channel": (
        "E027",
        "channel",
        f"Use A-Z, a-z, 0-9, _, - and . only, at most {MAX_CHANNEL_LENGTH} characters; "
        'the default is "changeflow".',
    ),
    "token_max_age": (
        "E035",
        "age",
        "It is the lifetime of make_token() tokens (a timedelta will do too); "
        "the default is 86400 (a day).",
    ),
    "redis": (
        "E007",
        "redis",
        'For example "redis://127.0.0.1:6379/0", or {"sentinels": [("sentinel1", 26379), '
        '("sentinel2", 26379)], "master_name": "changeflow"}; None uses the channel '
        "layer's Redis.",
    ),
    "metrics_port": ("E008", "port", "For example 9108; None serves no metrics from the worker."),
}


def is_valid(attribute: str, value: Any) -> bool:
    """Whether ``value`` is of the kind the setting ``attribute`` must be."""
    _, kind, _ = PLAIN[attribute] if attribute in PLAIN else HINTED[attribute]
    return KINDS[kind][0](value)
