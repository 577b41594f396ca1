"""Prometheus metrics: their definitions, and cheap per-table and per-handler handles.

Every metric lives in ``prometheus_client``'s default registry, so a process
serves them with its own (the worker with ``--metrics-port``, a web process
through ``metrics_http.metrics_view``). The hot path never looks a label up:
``for_stream()`` and ``for_handler()`` give objects holding the labelled
children, made once per table or handler.

Lag is measured from the moment the worker read a change off its changefeed
(RethinkDB gives no commit time): the change message carries that moment as
``read_at`` (Unix time), so a web process can measure it too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from .pushes import UNAVAILABLE

# Seconds: from well under a millisecond (same machine) to a stuck channel layer.
LAG_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
HOOK_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The ``stream`` label of every table when CHANGEFLOW_METRICS_PER_TABLE is False.
ALL_STREAMS = "*"
PUSH_RESULTS = ("ok", "invalid", "rejected", "unavailable")
HOOK_ERROR_KINDS = ("exception", "timeout", "skipped")

# -- the worker ---------------------------------------------------------------

CHANGES_READ = Counter("changeflow_changes_read", "Changes read off the changefeeds.", ["stream"])
CHANGES_SENT = Counter(
    "changeflow_changes_sent", "Changes sent to their channel-layer group.", ["stream"]
)
FEED_RESTARTS = Counter(
    "changeflow_feed_restarts",
    "Changefeeds restarted after an error or a lost connection (each one a new epoch).",
    ["stream"],
)
GROUP_SEND_LAG = Histogram(
    "changeflow_group_send_lag_seconds",
    "From reading a change off the feed to the end of its group_send.",
    buckets=LAG_BUCKETS,
)
HOOK_DURATION = Histogram(
    "changeflow_hook_duration_seconds",
    "Time a flow_handlers call took (a timed-out call counts its timeout).",
    ["handler"],
    buckets=HOOK_BUCKETS,
)
HOOK_ERRORS = Counter(
    "changeflow_hook_errors",
    "flow_handlers calls that raised, timed out, or were skipped (handler too far behind).",
    ["handler", "kind"],
)
PUSHES = Counter(
    "changeflow_pushes",
    "Pushes handled by the worker, by result: ok, invalid (refused before writing), "
    "rejected (refused by RethinkDB), unavailable (RethinkDB unreachable, or an internal error).",
    ["result"],
)
LEASES_HELD = Gauge("changeflow_leases_held", "Table leases this worker holds.")

# -- the web processes ----------------------------------------------------------

WEBSOCKET_CLIENTS = Gauge("changeflow_websocket_clients", "Connected websocket clients.")
SUBSCRIPTIONS = Gauge("changeflow_subscriptions", "Subscriptions of the connected clients.")
WEBSOCKET_SEND_LAG = Histogram(
    "changeflow_websocket_send_lag_seconds",
    "From reading a change off the feed (in the worker) to sending it on a websocket.",
    buckets=LAG_BUCKETS,
)

# Made once (so every result shows, at 0): the push path never looks a label up.
_PUSH_COUNTERS = {result: PUSHES.labels(result) for result in PUSH_RESULTS}


class StreamMetrics:
    """The labelled children of one table, made once."""

    __slots__ = ("label", "read_counter", "restarts", "sent_counter")

    def __init__(self, label: str) -> None:
        self.label = label
        self.read_counter = CHANGES_READ.labels(label)
        self.sent_counter = CHANGES_SENT.labels(label)
        self.restarts = FEED_RESTARTS.labels(label)

    def read(self, message: dict[str, Any]) -> None:
        """A change came off the feed: count it and stamp the moment (``read_at``)."""
        self.read_counter.inc()
        message["read_at"] = time.time()

    def sent(self, messages: Iterable[dict[str, Any]]) -> None:
        """These changes' group_send just ended: count them and observe their lag."""
        now = time.time()
        count = 0
        for message in messages:
            count += 1
            read_at = message.get("read_at")
            if read_at is not None:
                GROUP_SEND_LAG.observe(max(now - read_at, 0.0))
        self.sent_counter.inc(count)


_streams: dict[str, StreamMetrics] = {}  # by stream, so the hot path never reads settings
_labels: dict[str, StreamMetrics] = {}  # by label


def _per_table() -> bool:
    from .conf import get_settings

    return bool(get_settings().metrics_per_table)


def for_stream(stream: str) -> StreamMetrics:
    """The metrics of ``"db.table"`` (all tables share ``"*"`` without per-table labels)."""
    metrics = _streams.get(stream)
    if metrics is None:
        label = stream if _per_table() else ALL_STREAMS
        metrics = _labels.get(label) or StreamMetrics(label)
        _streams[stream] = _labels[label] = metrics
    return metrics


def forget_stream(stream: str) -> None:
    """The table is gone (or followed elsewhere): drop its series."""
    metrics = _streams.pop(stream, None)
    if metrics is None or metrics.label != stream:
        return
    del _labels[stream]
    for metric in (CHANGES_READ, CHANGES_SENT, FEED_RESTARTS):
        with contextlib.suppress(KeyError):
            metric.remove(stream)


class HandlerMetrics:
    """The labelled children of one ``flow_handlers``, made once."""

    __slots__ = ("duration", "exceptions", "skipped", "timeouts")

    def __init__(self, name: str) -> None:
        self.duration = HOOK_DURATION.labels(name)
        self.exceptions = HOOK_ERRORS.labels(name, "exception")
        self.timeouts = HOOK_ERRORS.labels(name, "timeout")
        self.skipped = HOOK_ERRORS.labels(name, "skipped")


_handlers: dict[str, HandlerMetrics] = {}


def for_handler(name: str) -> HandlerMetrics:
    metrics = _handlers.get(name)
    if metrics is None:
        metrics = _handlers[name] = HandlerMetrics(name)
    return metrics


def push_result_label(result: dict[str, Any] | None) -> str:
    """``ok``, ``invalid`` (None: refused before writing), ``rejected`` or ``unavailable``."""
    if result is None:
        return "invalid"
    if result.get("ok"):
        return "ok"
    return "unavailable" if result.get("code") == UNAVAILABLE else "rejected"


def count_push(result: dict[str, Any] | None) -> None:
    """One push handled; ``result`` is its answer, None for one refused before writing."""
    _PUSH_COUNTERS[push_result_label(result)].inc()


def websocket_sent(read_at: float) -> None:
    """A change frame went out on a websocket."""
    WEBSOCKET_SEND_LAG.observe(max(time.time() - read_at, 0.0))
