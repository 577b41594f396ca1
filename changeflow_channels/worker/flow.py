"""The worker's machinery: discovery, one feed per watched table, delivery, hooks, pushes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from asyncio import FIRST_COMPLETED
from typing import Any

from rethinkdb.errors import ReqlOpFailedError

from .. import metrics
from ..conf import ChangeflowSettings
from ..jsonsafe import json_safe
from ..rethink import RAW_FORMATS, Reconnecting, new_driver
from ..rethinkdb_url import parse_rethinkdb_url
from ..sync import SyncRequest, sync_channel
from ..tables.autoclean import AutoClean
from ..tables.config import parse_tables
from ..tables.ddl import TableRegistry
from ..tables.setup import TableSetup
from .discovery import TableDiscovery
from .feeds import TableFeed
from .hooks import Handler, HookRunner
from .leases import LeaseStore
from .publish import Delivery
from .push_writer import PushWriter
from .table_clashes import ClashRepairs
from .table_sharing import TableSharing
from .table_state import sync_answer
from .watch import WatchPatterns

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
# How long a sync request waits for a (re)starting feed to load its documents.
SYNC_WAIT = 5.0
# At shutdown, feeds are closed once they have been quiet this long (but no later than the limit).
SETTLE_QUIET = 0.2
SETTLE_LIMIT = 3.0
STOP_TIMEOUT = 5.0


class Flow:
    """Everything the worker runs besides receiving pushes."""

    def __init__(
        self,
        settings: ChangeflowSettings,
        channel_layer: Any,
        handlers: list[Handler],
        *,
        watch: list[str] | None = None,
        verbose: bool | None = None,
        leases: LeaseStore | None = None,
    ) -> None:
        self.settings = settings
        self.channel_layer = channel_layer
        self.verbose = settings.verbose if verbose is None else verbose
        self.r = new_driver()
        self.address = parse_rethinkdb_url(settings.rethinkdb)
        self.patterns = WatchPatterns(watch if watch is not None else settings.watch)
        self.table_configs = parse_tables(settings.tables)
        self.tables = TableRegistry(self.r, self.table_configs)
        self.setup = TableSetup(self.r, self.address, self.table_configs)
        self.autoclean = AutoClean(
            self.r,
            self.address,
            self.table_configs,
            positive_seconds(settings.clean_every, "CHANGEFLOW_CLEAN_EVERY"),
            verbose=self.verbose,
        )
        self._write_connection = Reconnecting(self.r, self.address)
        self.writer = PushWriter(self._write_connection, self.tables, settings.push_timeout)
        self.hooks = HookRunner(handlers, settings.handler_timeout)
        self.delivery = Delivery(
            channel_layer,
            self.hooks,
            verbose=self.verbose,
            batch_size=settings.batch_size,
            batch_bytes=settings.batch_bytes,
        )
        self.repairs = ClashRepairs(self.r, self._write_connection)
        self.discovery = TableDiscovery(
            self.r, self.address, self._table_added, self._table_removed, self.repairs.start
        )
        self.feeds: dict[str, tuple[TableFeed, asyncio.Task[None]]] = {}
        self._discovery_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        # Several workers: one reader per table, by leases in Redis (None: follow every table).
        self.watched: dict[str, tuple[str, str, str]] = {}  # stream -> (database, table, key)
        self.sharing: TableSharing | None = None
        self.own_sync_channel: str | None = None
        if leases is not None:
            self.own_sync_channel = worker_sync_channel(settings.channel, leases.worker_id)
            info = {
                "id": leases.worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started": time.time(),
                "sync_channel": self.own_sync_channel,
                "watch": self.patterns.patterns,
                "lease_time": settings.lease_time,
            }
            lease_time = positive_seconds(settings.lease_time, "CHANGEFLOW_LEASE_TIME")
            self.sharing = TableSharing(leases, lease_time, self, info)
            self.delivery.may_send = self.sharing.may_send

    async def start(self) -> None:
        """Start in the background: configured tables and indexes (CHANGEFLOW_TABLES),
        then table discovery and feeds; autoclean once the indexes are built."""
        self.hooks.start()
        setup = asyncio.ensure_future(self.setup.run())
        setup.add_done_callback(_log_crash("table set-up"))
        clean = asyncio.ensure_future(self.autoclean.run(start_after=self.setup.ready))
        clean.add_done_callback(_log_crash("autoclean"))
        self._background = [setup, clean]
        self._discovery_task = asyncio.ensure_future(self._discover())
        self._discovery_task.add_done_callback(_log_crash("table discovery"))
        if self.sharing is not None:
            self.sharing.start(self.discovery.ready)

    async def _discover(self) -> None:
        # The configured tables are created with their keys first: discovery
        # (and thus pushes, which wait for it) must not see them half made.
        if await self.setup.wait_created():
            await self.discovery.run()

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Until the tables are known and their feeds are open."""
        try:
            await asyncio.wait_for(self.discovery.ready.wait(), timeout)
            if self.sharing is not None:  # the first round of leases, with the tables known
                await asyncio.wait_for(self.sharing.ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return await self._feeds_open(timeout)

    async def _feeds_open(self, timeout: float) -> bool:
        """Until every feed followed is open; a feed that ends (its table or
        database dropped meanwhile) is no longer waited for."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while True:
            waiting = [
                (feed, task) for feed, task in self.feeds.values() if not feed.ready.is_set()
            ]
            if not waiting:
                return True
            remaining = give_up - loop.time()
            if remaining <= 0:
                return False
            opened = [asyncio.ensure_future(feed.ready.wait()) for feed, _ in waiting]
            ended = [task for _, task in waiting]
            either: list[asyncio.Future[Any]] = [*opened, *ended]
            try:
                await asyncio.wait(either, timeout=remaining, return_when=FIRST_COMPLETED)
            finally:
                for waiter in opened:
                    waiter.cancel()

    async def settle(self, quiet: float = SETTLE_QUIET, limit: float = SETTLE_LIMIT) -> None:
        """Let the changes of the pushes written so far reach their groups.

        Waits (at most ``limit`` seconds) until every watched table this worker
        wrote to has an open feed that caught up (a table a push created may not
        even be followed yet), and then until no feed has read anything for
        ``quiet`` seconds.
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + limit
        while loop.time() < give_up:
            if any(not self._caught_up(db, table) for db, table in self.writer.written):
                await asyncio.sleep(0.02)
                continue
            last = max((feed.last_read for feed, _ in self.feeds.values()), default=0.0)
            idle = loop.time() - last
            if idle >= quiet and not self.delivery.busy:
                return
            await asyncio.sleep(max(quiet - idle, 0.02))
        logger.warning("changes of the last pushes may not all have been announced before exit")

    def _caught_up(self, database: str, table: str) -> bool:
        if not self.patterns.matches(database, table):
            return True
        if self.sharing is not None and self.sharing.held_elsewhere(f"{database}.{table}"):
            return True  # another worker announces it
        entry = self.feeds.get(f"{database}.{table}")
        return entry is not None and entry[0].caught_up

    async def stop(self) -> None:
        if self.sharing is not None:
            self.sharing.acquiring = False  # leases are still renewed until the feeds are closed
        self.setup.stop()
        self.autoclean.stop()
        self.discovery.stop()
        tasks = [task for _, task in self.feeds.values()] + self._background + self.repairs.tasks
        for feed, _ in self.feeds.values():
            feed.stop()
        if self._discovery_task is not None:
            tasks.append(self._discovery_task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                task.cancel()
        self.feeds.clear()
        try:
            await asyncio.wait_for(self.delivery.drain(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("changes still unsent at shutdown (channel layer unavailable?)")
        if self.sharing is not None:
            await self.sharing.stop()
        await self.hooks.stop(self.settings.handler_timeout)
        await self._write_connection.close()

    async def sync(
        self, request: SyncRequest, message: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Answer a consumer's ``changeflow.sync``: missed changes and/or a snapshot.

        With several workers, a request for a table another worker follows is
        forwarded to that worker's own sync channel (None is returned: the holder
        answers); a table nobody follows right now (being taken over) is answered
        ``unavailable``, and the consumer asks again shortly.
        """
        if self.sharing is not None and request.stream in self.watched:
            if not self.sharing.holds(request.stream):
                if message is not None and not message.get("forwarded"):
                    holder = await self.sharing.holder(request.stream)
                    if holder is not None and holder != self.sharing.worker_id:
                        channel = worker_sync_channel(self.settings.channel, holder)
                        await self.channel_layer.send(channel, {**message, "forwarded": True})
                        return None
                return _unavailable(request)
        entry = self.feeds.get(request.stream)
        feed = entry[0] if entry is not None else None
        if feed is not None and not feed.caught_up:
            # A feed (re)starting is loading its documents: the answer waits for them.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(feed.caught_up_event.wait(), SYNC_WAIT)
        if feed is not None and not feed.caught_up:
            # Still (re)connecting: the consumer asks again a little later.
            return _unavailable(request)
        answer = sync_answer(request, feed.state if feed is not None else None)
        if request.snapshot and answer["snapshot"] is None and answer["resync"] != "unavailable":
            if request.since is None or answer["resync"] is not None:
                answer["snapshot"] = await self._read_snapshot(request)
        return answer

    async def _read_snapshot(self, request: SyncRequest) -> dict[str, Any]:
        """A table too large to keep in memory: read (at most the limit) from RethinkDB."""
        limit = self.settings.snapshot_limit
        query = self.r.db(request.database).table(request.table).limit(limit + 1)
        try:
            conn = await self._write_connection.get()
            documents = await query.run(conn, **RAW_FORMATS)
            documents = (
                [json_safe(doc) async for doc in documents]
                if not isinstance(documents, list)
                else json_safe(documents)
            )
        except ReqlOpFailedError:
            documents = []  # no such table (yet)
        return {"documents": documents[:limit], "truncated": len(documents) > limit}

    def _table_added(self, database: str, table: str, primary_key: str, appeared: bool) -> None:
        self.tables.remember(database, table, primary_key)
        stream = f"{database}.{table}"
        if not self.patterns.matches(database, table) or stream in self.feeds:
            return
        self.watched[stream] = (database, table, primary_key)
        if self.sharing is not None:
            self.sharing.add(stream, appeared)  # followed once (and while) its lease is ours
            return
        self.start_feed(stream, appeared)

    # -- FeedControl (table_sharing.py) ------------------------------------------

    def start_feed(self, stream: str, announce_initial: bool) -> None:
        """Follow a watched table (a new ``TableFeed``: a new epoch)."""
        if stream in self.feeds or stream not in self.watched:
            return
        database, table, primary_key = self.watched[stream]
        feed = TableFeed(
            self.r,
            self.address,
            database,
            table,
            self.delivery if self.sharing is None else self._guarded_sink(stream),
            announce_initial=announce_initial,
            primary_key=primary_key,
            history=self.settings.history,
            snapshot_limit=self.settings.snapshot_limit,
        )
        task = asyncio.ensure_future(feed.run())
        task.add_done_callback(lambda done: self._feed_done(stream, done))
        self.feeds[stream] = (feed, task)

    def _guarded_sink(self, stream: str) -> Any:
        """Delivery, but a feed dropped (lease lost) delivers nothing more, even what
        it read before its connection closed."""

        async def sink(message: dict[str, Any]) -> None:
            entry = self.feeds.get(stream)
            if entry is not None and entry[0].state.epoch == message["epoch"]:
                await self.delivery(message)

        return sink

    async def stop_feed(self, stream: str) -> None:
        """Stop following ``stream``; return once the changes it read were sent."""
        entry = self.feeds.get(stream)
        if entry is None:
            return
        entry[0].stop()
        await asyncio.wait([entry[1]], timeout=STOP_TIMEOUT)
        self.feeds.pop(stream, None)
        await self.delivery.drain_stream(stream)
        logger.info("stopped following %s", stream)

    def drop_feed(self, stream: str, why: str = "lease lost") -> None:
        """Stop following ``stream`` at once (its lease is lost, its table dropped)."""
        entry = self.feeds.pop(stream, None)
        if entry is not None:
            entry[0].stop()
            logger.info("stopped following %s (%s)", stream, why)

    def is_following(self, stream: str) -> bool:
        return stream in self.feeds

    def published_state(self) -> dict[str, Any]:
        """The followed tables' positions and lag, for ``changeflow status``."""
        now = asyncio.get_running_loop().time()
        tables = {}
        for stream, (feed, _) in self.feeds.items():
            tables[stream] = {
                "epoch": feed.state.epoch,
                "seq": feed.state.seq,
                "caught_up": feed.caught_up,
                "pending": self.delivery.pending(stream),
                "last_read_ago": round(now - feed.last_read, 3) if feed.last_read else None,
            }
        return tables

    def _table_removed(self, database: str, table: str) -> None:
        self.tables.forget(database, table)
        self.watched.pop(f"{database}.{table}", None)
        if self.sharing is not None:
            self.sharing.remove(f"{database}.{table}")
        metrics.forget_stream(f"{database}.{table}")
        self.drop_feed(f"{database}.{table}", "table dropped")

    def _feed_done(self, stream: str, task: asyncio.Task[None]) -> None:
        entry = self.feeds.get(stream)
        if entry is not None and entry[1] is task:
            del self.feeds[stream]
        _log_crash(f"feed of {stream}")(task)


def worker_sync_channel(channel: str, worker_id: str) -> str:
    """A worker's own sync channel: requests forwarded to the holder of a table."""
    return f"{sync_channel(channel)}.{worker_id}"


def _unavailable(request: SyncRequest) -> dict[str, Any]:
    answer = sync_answer(request, None)
    answer.update(resync="unavailable", changes=None, snapshot=None)
    return answer


def positive_seconds(value: Any, name: str) -> float:
    """``value`` as seconds; ``ValueError`` naming the setting unless it is a positive number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _log_crash(what: str) -> Any:
    """A done-callback that logs a task's exception (never left unretrieved)."""

    def callback(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s crashed", what, exc_info=task.exception())

    return callback
