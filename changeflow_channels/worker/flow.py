"""The worker's machinery: discovery, one feed per watched table (on shared
connections), delivery, hooks, pushes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from typing import Any

from rethinkdb.errors import ReqlOpFailedError

from .. import metrics
from ..conf import ChangeflowSettings
from ..jsonsafe import json_safe
from ..rethink import RAW_FORMATS, Reconnecting, new_driver
from ..rethinkdb_url import parse_rethinkdb_url
from ..sync import SyncRequest
from ..tables.autoclean import AutoClean
from ..tables.config import parse_tables
from ..tables.ddl import TableRegistry
from ..tables.setup import TableSetup
from .discovery import TableDiscovery
from .feed_gate import FeedGate
from .feeds import TableFeed
from .hooks import Handler, HookRunner
from .leases import LeaseStore, positive_seconds
from .ownership import Ownership, SyncRoute, fence_for, ownership_for
from .publish import Delivery
from .push_writer import PushWriter
from .table_clashes import ClashRepairs
from .table_feeds import STOP_TIMEOUT, TableFeeds
from .table_state import sync_answer
from .watch import WatchPatterns

logger = logging.getLogger(__name__)

READY_TIMEOUT = 30.0
# How long a sync request waits for a (re)starting feed to load its documents.
SYNC_WAIT = 5.0
# A snapshot read from RethinkDB: its stream, and the position (epoch, seq) it began at.
ReadKey = tuple[str, str | None, int]
# At shutdown, feeds are closed once they have been quiet this long (but no later than the limit).
SETTLE_QUIET = 0.2
SETTLE_LIMIT = 3.0


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
        # Which tables are followed here: every watched one, or (several workers,
        # leases in Redis) those whose lease this worker holds. See ownership.py.
        fence = fence_for(leases)
        self.delivery = Delivery(
            channel_layer,
            self.hooks,
            verbose=self.verbose,
            batch_size=settings.batch_size,
            batch_bytes=settings.batch_bytes,
            may_send=fence.may_send,
        )
        self.following = TableFeeds(
            self.r,
            self.address,
            self.delivery,
            history=settings.history,
            snapshot_limit=settings.snapshot_limit,
            feed_queue_size=settings.feed_queue_size,
            fenced=fence.enforced,
            connections=settings.feed_connections,
            memory_budget=settings.memory_budget,
        )
        self.ownership: Ownership = ownership_for(
            leases,
            fence,
            self.following,
            settings=settings,
            channel_layer=channel_layer,
            watch=self.patterns.patterns,
        )
        self.following.on_epoch = self.ownership.feed_ready
        # No push is written before a ready feed will announce it (feed_gate.py).
        self.writer.feed_gate = FeedGate(
            self.r, self.patterns, self.following, self.ownership, self.tables
        )
        self.repairs = ClashRepairs(self.r, self._write_connection)
        self.discovery = TableDiscovery(
            self.r, self.address, self._table_added, self._table_removed, self.repairs.start
        )
        self._discovery_task: asyncio.Task[None] | None = None
        # Snapshots of large tables being read for sync answers, by stream and the
        # position they are read at (shared).
        self._snapshot_reads: dict[ReadKey, asyncio.Future[dict[str, Any]]] = {}
        self._background: list[asyncio.Task[None]] = []

    @property
    def feeds(self) -> dict[str, tuple[TableFeed, asyncio.Task[None]]]:
        """The tables followed: their feed and its task."""
        return self.following.feeds

    @property
    def own_sync_channel(self) -> str | None:
        """Several workers: this worker's own sync channel (runner.py listens to it)."""
        return self.ownership.own_sync_channel

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
        self.ownership.start(self.discovery.ready)

    async def _discover(self) -> None:
        # The configured tables are created with their keys first: discovery
        # (and thus pushes, which wait for it) must not see them half made.
        if await self.setup.wait_created():
            await self.discovery.run()

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> bool:
        """Until the tables are known and their feeds are open."""
        try:
            await asyncio.wait_for(self.discovery.ready.wait(), timeout)
            # Several workers: the first round of leases, with the tables known.
            await asyncio.wait_for(self.ownership.ready.wait(), timeout)
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
        if self.ownership.held_elsewhere(f"{database}.{table}"):
            return True  # another worker announces it
        feed = self.following.feed(f"{database}.{table}")
        return feed is not None and feed.caught_up

    async def stop(self) -> None:
        self.ownership.stop_acquiring()  # leases are still renewed until the feeds are closed
        self.setup.stop()
        self.autoclean.stop()
        self.discovery.stop()
        tasks = self.following.stop_all() + self._background + self.repairs.tasks
        if self._discovery_task is not None:
            tasks.append(self._discovery_task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
            for task in pending:
                task.cancel()
        self.following.clear()
        await self.following.close()
        try:
            await asyncio.wait_for(self.delivery.drain(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("changes still unsent at shutdown (channel layer unavailable?)")
        self.delivery.close()
        await self.ownership.stop()
        await self.hooks.stop(self.settings.handler_timeout)
        self.writer.push_keys.close()
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
        route = await self.ownership.route_sync(request.stream, message)
        if route is SyncRoute.FORWARDED:
            return None
        if route is SyncRoute.UNAVAILABLE:
            return _unavailable(request)
        await self.sync_ready(request)
        feed = self.following.feed(request.stream)
        if feed is not None and not feed.caught_up:
            # Still (re)connecting: the consumer asks again a little later.
            return _unavailable(request)
        answer = sync_answer(request, feed.state if feed is not None else None)
        if request.snapshot and answer["snapshot"] is None and answer["resync"] != "unavailable":
            if request.since is None or answer["resync"] is not None:
                answer["snapshot"] = await self._read_snapshot(request, answer)
        return answer

    async def sync_ready(self, request: SyncRequest) -> None:
        """Until the feed of ``request``'s table, if followed here and (re)starting,
        has loaded its documents (at most ``SYNC_WAIT`` seconds): the answer waits
        for them (``catchup.py`` waits here without taking a turn)."""
        feed = self.following.feed(request.stream)
        if feed is not None and not feed.caught_up:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(feed.caught_up_event.wait(), SYNC_WAIT)

    async def _read_snapshot(self, request: SyncRequest, answer: dict[str, Any]) -> dict[str, Any]:
        """A table too large to keep in memory: read (at most the limit) from RethinkDB,
        once for all the requests answered at the same position meanwhile (the result
        is shared: not to be changed). A read begun at an earlier position may lack
        changes up to ``answer``'s: the answer would claim them, never to send them."""
        key = (request.stream, answer["epoch"], answer["seq"])
        reading = self._snapshot_reads.get(key)
        if reading is None:
            reading = asyncio.ensure_future(self._read_table(request.database, request.table))
            self._snapshot_reads[key] = reading
            reading.add_done_callback(_forget_read(self._snapshot_reads, key))
        return await asyncio.shield(reading)

    async def _read_table(self, database: str, table: str) -> dict[str, Any]:
        limit = self.settings.snapshot_limit
        query = self.r.db(database).table(table).limit(limit + 1)
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
        if not self.patterns.matches(database, table) or f"{database}.{table}" in self.feeds:
            return
        self.ownership.add(self.following.watch(database, table, primary_key), appeared)

    def _table_removed(self, database: str, table: str) -> None:
        stream = f"{database}.{table}"
        self.tables.forget(database, table)
        self.following.unwatch(stream)
        self.ownership.remove(stream)
        metrics.forget_stream(stream)
        self.following.drop_feed(stream, "table dropped")
        self.delivery.forget(stream)

    def is_following(self, stream: str) -> bool:
        return self.following.is_following(stream)


def _forget_read(reads: dict[ReadKey, asyncio.Future[Any]], key: ReadKey) -> Any:
    """A done-callback: the read is over (a later request reads again); its error,
    if nobody awaits it any more, is retrieved (logged by those who did)."""

    def callback(reading: asyncio.Future[Any]) -> None:
        if reads.get(key) is reading:
            del reads[key]
        if not reading.cancelled():
            reading.exception()

    return callback


def _unavailable(request: SyncRequest) -> dict[str, Any]:
    answer = sync_answer(request, None)
    answer.update(resync="unavailable", changes=None, snapshot=None)
    return answer


def _log_crash(what: str) -> Any:
    """A done-callback that logs a task's exception (never left unretrieved)."""

    def callback(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s crashed", what, exc_info=task.exception())

    return callback
