"""Which watched tables this worker follows, and what that means for sending and sync.

One interface, ``Ownership``, two implementations:

- ``SoleOwner`` (one worker, no leases): follows every watched table, sends every
  change, answers every sync request itself.
- ``Leased`` (several workers sharing Redis): follows the tables whose lease it holds
  (``table_sharing.TableSharing`` takes, renews and gives them up; ``leases.py`` is the
  Redis side), sends a table's changes only while its lease is safe (``Fence``), and
  forwards a sync request for a table another worker follows to that worker.

The flow (``flow.py``) tells the ownership which tables are watched (``add``,
``remove``) and asks it (``held_elsewhere``, ``route_sync``); the ownership starts and
stops the feeds (``table_feeds.TableFeeds``). Built by ``fence_for`` and
``ownership_for``, the only places that look at whether there are leases.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import os
import socket
import time
from abc import ABC, abstractmethod
from typing import Any

from ..conf import ChangeflowSettings
from ..sync import sync_channel
from .leases import LeaseStore, positive_seconds
from .table_sharing import FeedControl, Fence, TableSharing

logger = logging.getLogger(__name__)


class SyncRoute(enum.Enum):
    """Who answers a sync request."""

    HERE = "here"  # this worker: from its feed, or from RethinkDB
    FORWARDED = "forwarded"  # sent on to the worker that follows the table: it answers
    UNAVAILABLE = "unavailable"  # nobody follows the table right now: ask again shortly


class Ownership(ABC):
    """Which watched tables this worker follows (see the module doc)."""

    #: Several workers: this worker's own sync channel (requests forwarded to it).
    own_sync_channel: str | None = None
    #: The push and sync channels are read by other workers too (pop them exclusively).
    shared: bool = False

    def __init__(self, ready: asyncio.Event) -> None:
        #: Set once the first decision on the tables known is made (their feeds started).
        self.ready = ready

    @abstractmethod
    def start(self, discovered: asyncio.Event) -> None:
        """Start deciding; ``discovered`` is set once the tables are known."""

    @abstractmethod
    def add(self, stream: str, appeared: bool) -> None:
        """A watched table exists (``appeared``: created while we watched)."""

    @abstractmethod
    def remove(self, stream: str) -> None:
        """A watched table was dropped (the flow stops its feed)."""

    @abstractmethod
    def holds(self, stream: str) -> bool:
        """Whether ``stream`` is this worker's to follow right now."""

    @abstractmethod
    def held_elsewhere(self, stream: str) -> bool:
        """Whether another worker followed ``stream`` at the last look."""

    @abstractmethod
    async def announced_elsewhere(self, stream: str) -> bool:
        """Whether another worker follows ``stream`` with a feed that caught up (as it
        published): a write into the table now is announced by that worker."""

    @abstractmethod
    def feed_ready(self, stream: str) -> None:
        """A feed of this worker caught up in a new epoch (others may wait for it)."""

    @abstractmethod
    async def route_sync(self, stream: str, message: dict[str, Any] | None) -> SyncRoute:
        """Who answers a sync request for ``stream`` (``message``: the request as
        received, forwarded as is when another worker answers it)."""

    @abstractmethod
    def stop_acquiring(self) -> None:
        """Shutting down: take no more tables (those held stay until ``stop``)."""

    @abstractmethod
    async def stop(self) -> None:
        """Once the feeds are closed: give everything up."""


class SoleOwner(Ownership):
    """One worker: every watched table is followed here."""

    def __init__(self, feeds: FeedControl) -> None:
        ready = asyncio.Event()
        ready.set()
        super().__init__(ready)
        self.feeds = feeds

    def start(self, discovered: asyncio.Event) -> None:
        """Nothing to take: each table is followed as soon as it is discovered."""

    def add(self, stream: str, appeared: bool) -> None:
        self.feeds.start_feed(stream, appeared)

    def remove(self, stream: str) -> None:
        """No lease to give up: the flow drops the table's feed itself."""

    def holds(self, stream: str) -> bool:
        return True

    def held_elsewhere(self, stream: str) -> bool:
        return False

    async def announced_elsewhere(self, stream: str) -> bool:
        return False

    def feed_ready(self, stream: str) -> None:
        """Nobody else waits for this worker's feeds."""

    async def route_sync(self, stream: str, message: dict[str, Any] | None) -> SyncRoute:
        return SyncRoute.HERE

    def stop_acquiring(self) -> None:
        """Nothing is acquired."""

    async def stop(self) -> None:
        """Nothing held to release."""


class Leased(Ownership):
    """Several workers: the tables whose lease this worker holds are followed here."""

    shared = True

    def __init__(self, sharing: TableSharing, channel_layer: Any, channel: str) -> None:
        super().__init__(sharing.ready)
        self.sharing = sharing
        self.channel_layer = channel_layer
        self.channel = channel
        self.own_sync_channel = worker_sync_channel(channel, sharing.worker_id)

    def start(self, discovered: asyncio.Event) -> None:
        self.sharing.start(discovered)

    def add(self, stream: str, appeared: bool) -> None:
        self.sharing.add(stream, appeared)  # followed once (and while) its lease is ours

    def remove(self, stream: str) -> None:
        self.sharing.remove(stream)

    def holds(self, stream: str) -> bool:
        return self.sharing.holds(stream)

    def held_elsewhere(self, stream: str) -> bool:
        return self.sharing.held_elsewhere(stream)

    async def announced_elsewhere(self, stream: str) -> bool:
        return await self.sharing.announced_elsewhere(stream)

    def feed_ready(self, stream: str) -> None:
        self.sharing.publish_soon()  # a push another worker holds may wait for it

    async def route_sync(self, stream: str, message: dict[str, Any] | None) -> SyncRoute:
        """A table another worker follows: forwarded to that worker's own sync
        channel (once: a forwarded request is never forwarded again); a table
        nobody follows right now (being taken over): unavailable."""
        if not self.sharing.watches(stream) or self.sharing.holds(stream):
            return SyncRoute.HERE
        if message is not None and not message.get("forwarded"):
            holder = await self.sharing.holder(stream)
            if holder is not None and holder != self.sharing.worker_id:
                channel = worker_sync_channel(self.channel, holder)
                await self.channel_layer.send(channel, {**message, "forwarded": True})
                return SyncRoute.FORWARDED
        return SyncRoute.UNAVAILABLE

    def stop_acquiring(self) -> None:
        self.sharing.stop_acquiring()

    async def stop(self) -> None:
        await self.sharing.stop()


def worker_sync_channel(channel: str, worker_id: str) -> str:
    """A worker's own sync channel: requests forwarded to the holder of a table."""
    return f"{sync_channel(channel)}.{worker_id}"


def fence_for(leases: LeaseStore | None) -> Fence:
    """What ``Delivery`` asks before sending: with leases, whether each table's lease
    is still safe (kept by the table sharing); without, always yes."""
    return Fence(enforced=leases is not None)


def ownership_for(
    leases: LeaseStore | None,
    fence: Fence,
    feeds: FeedControl,
    *,
    settings: ChangeflowSettings,
    channel_layer: Any,
    watch: list[str],
) -> Ownership:
    """``SoleOwner`` without leases; ``Leased`` with them (``fence`` from ``fence_for``;
    ``watch``: the patterns, published with the worker's heartbeat)."""
    if leases is None:
        return SoleOwner(feeds)
    channel = settings.channel
    info = {
        "id": leases.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.time(),
        "sync_channel": worker_sync_channel(channel, leases.worker_id),
        "watch": watch,
        "lease_time": settings.lease_time,
    }
    lease_time = positive_seconds(settings.lease_time, "CHANGEFLOW_LEASE_TIME")
    sharing = TableSharing(leases, lease_time, feeds, info, fence)
    return Leased(sharing, channel_layer, channel)
