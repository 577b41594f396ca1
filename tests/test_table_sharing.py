"""Leases against a real redis-server of the test's own: fencing in a partition.

``redis-server`` is paused with SIGSTOP: its connections stay open and nothing is
answered, as in a network partition. The feeds are a recording stand-in for the
flow (``FeedControl``); everything else is real: Redis, the Lua scripts, timers.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from changeflow_channels.testing.processes import RedisServer
from changeflow_channels.worker.leases import LeaseStore, RedisTarget
from changeflow_channels.worker.table_sharing import FENCE_FRACTION, TableSharing, share_of

LEASE = 1.5
STREAMS = ["db.a", "db.b"]


class Feeds:
    """Records when each feed starts and stops (loop time)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, str]] = []
        self.changed = asyncio.Event()

    def _note(self, kind: str, stream: str) -> None:
        self.events.append((asyncio.get_running_loop().time(), kind, stream))
        self.changed.set()

    def start_feed(self, stream: str, announce_initial: bool) -> None:
        self._note("start", stream)

    async def stop_feed(self, stream: str) -> None:
        self._note("stop", stream)

    def drop_feed(self, stream: str) -> None:
        self._note("drop", stream)

    def is_following(self, stream: str) -> bool:
        return stream in self.following()

    def published_state(self) -> dict[str, Any]:
        return {}

    def following(self) -> set[str]:
        now: set[str] = set()
        for _, kind, stream in self.events:
            (now.add if kind == "start" else now.discard)(stream)
        return now

    async def until(self, predicate: Any, timeout: float) -> None:
        async def wait() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


def sharing(
    server: RedisServer,
    worker_id: str,
    streams: list[str] = STREAMS,
    feeds_class: type[Feeds] = Feeds,
) -> tuple[TableSharing, Feeds]:
    target = RedisTarget(Redis.from_url(server.url), "t:changeflow:changeflow", server.url)
    store = LeaseStore(target, worker_id, LEASE, timeout=LEASE / 5)
    feeds = feeds_class()
    shared = TableSharing(store, LEASE, feeds, {"id": worker_id})
    for stream in streams:
        shared.add(stream, appeared=False)
    discovered = asyncio.Event()
    discovered.set()
    shared.start(discovered)
    return shared, feeds


def intervals(feeds: Feeds, stream: str) -> list[tuple[float, float]]:
    spans, since = [], None
    for at, kind, name in feeds.events:
        if name != stream:
            continue
        if kind == "start":
            since = at
        elif since is not None:
            spans.append((since, at))
            since = None
    if since is not None:
        spans.append((since, float("inf")))
    return spans


def test_share() -> None:
    assert [share_of(6, n) for n in (0, 1, 2, 3, 4, 7)] == [6, 6, 3, 2, 2, 1]


async def test_a_worker_cut_off_from_redis_stops_its_feeds_before_its_leases_can_expire(
    redis_server,
):
    a, feeds_a = sharing(redis_server, "a")
    await feeds_a.until(lambda: feeds_a.following() == set(STREAMS), 5)
    loop = asyncio.get_running_loop()
    redis_server.process.signal(signal.SIGSTOP)  # the partition: Redis answers nothing
    cut_at = loop.time()
    try:
        await feeds_a.until(lambda: not feeds_a.following(), LEASE)
        dropped_after = loop.time() - cut_at
        # The last renewal was sent before the cut: its lease lives >= LEASE after it.
        assert dropped_after <= FENCE_FRACTION * LEASE + LEASE / 20 + 0.05, dropped_after
        assert not any(a.may_send(stream) for stream in STREAMS)
        await asyncio.sleep(LEASE - dropped_after + 0.2)  # the leases' own time runs out
    finally:
        redis_server.process.signal(signal.SIGCONT)
    b, feeds_b = sharing(redis_server, "b")
    # Both reach Redis again: the tables end up one each, never followed twice at once.
    await feeds_b.until(lambda: len(feeds_b.following()) >= 1, 5)
    await feeds_a.until(lambda: len(feeds_a.following()) == 1, 10)
    await feeds_b.until(lambda: len(feeds_b.following()) == 1, 10)
    for stream in STREAMS:
        for start_a, end_a in intervals(feeds_a, stream):
            for start_b, end_b in intervals(feeds_b, stream):
                assert end_a <= start_b or end_b <= start_a, (
                    stream,
                    feeds_a.events,
                    feeds_b.events,
                )
    await a.stop()
    await b.stop()


async def test_clean_stop_releases_the_leases_at_once(redis_server):
    a, feeds_a = sharing(redis_server, "a")
    await feeds_a.until(lambda: feeds_a.following() == set(STREAMS), 5)
    b, feeds_b = sharing(redis_server, "b")
    await feeds_b.until(lambda: len(feeds_b.following()) == 1, 10)  # balanced: one each
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await a.stop()
    await feeds_b.until(lambda: feeds_b.following() == set(STREAMS), LEASE)
    assert loop.time() - stopped_at < LEASE / 2  # not waiting for an expiry
    await b.stop()


class SlowStops(Feeds):
    """Stopping a feed takes a while (a busy table's last changes being sent)."""

    async def stop_feed(self, stream: str) -> None:
        await asyncio.sleep(LEASE / 5 * 0.9)  # just under one tick each
        self._note("stop", stream)


async def test_giving_up_many_tables_never_fences_the_tables_kept(redis_server):
    streams = [f"db.t{n}" for n in range(12)]
    a, feeds_a = sharing(redis_server, "a", streams, SlowStops)
    await feeds_a.until(lambda: len(feeds_a.following()) == 12, 5)
    b, feeds_b = sharing(redis_server, "b", streams, SlowStops)
    await feeds_a.until(lambda: len(feeds_a.following()) == 6, 15)
    await feeds_b.until(lambda: len(feeds_b.following()) == 6, 5)
    # Six given up one by one (each stopped cleanly); the six kept were never fenced.
    assert [kind for _, kind, _ in feeds_a.events].count("drop") == 0, feeds_a.events
    await a.stop()
    await b.stop()


class BusyStarts(Feeds):
    """Starting a feed keeps the event loop busy for a while, as thousands of
    feeds starting at once do in a worker."""

    def start_feed(self, stream: str, announce_initial: bool) -> None:
        time.sleep(LEASE / 30)  # blocking on purpose: the loop's own work
        super().start_feed(stream, announce_initial)


async def test_taking_many_tables_never_fences_the_tables_taken_first(redis_server):
    """40 tables taken while each feed start keeps the loop busy 50 ms: 2 s of taking,
    twice the fence (1 s). Before: one round took them all, one by one, and the first
    ones' fence passed before the next round could renew them, so they were stopped
    ("lease not renewed") and taken again, over and over (a worker of 3,000 tables on
    a real RethinkDB never got ready)."""
    streams = [f"db.t{n}" for n in range(40)]
    a, feeds = sharing(redis_server, "a", streams, BusyStarts)
    await feeds.until(lambda: len(feeds.following()) == 40, 20)
    assert [kind for _, kind, _ in feeds.events].count("drop") == 0, feeds.events
    await a.stop()


async def test_a_table_dropped_and_created_again_while_its_lease_is_held_is_followed_again(
    redis_server,
):
    a, feeds_a = sharing(redis_server, "a")
    await feeds_a.until(lambda: feeds_a.following() == set(STREAMS), 5)
    a.remove("db.a")  # dropped: the flow has stopped its feed
    feeds_a.drop_feed("db.a")
    a.add("db.a", appeared=True)  # created again before the next round
    await feeds_a.until(lambda: feeds_a.following() == set(STREAMS), 5)
    assert a.holds("db.a")
    await a.stop()


class PublishingFeeds(Feeds):
    """Feeds whose state (caught up or not) is published with the heartbeat."""

    caught_up = False

    def published_state(self) -> dict[str, Any]:
        return {stream: {"caught_up": self.caught_up} for stream in self.following()}


async def test_another_worker_learns_when_the_holders_feed_is_ready(redis_server):
    """A push taken by a worker that does not hold the table waits for this (issue 14,
    item 1): the holder publishes its feed caught up at once, not at its next tick."""
    lease = 15.0  # a tick of 3 s: "at once" is told from "at the next tick"

    def worker(worker_id: str, streams: list[str]) -> tuple[TableSharing, PublishingFeeds]:
        target = RedisTarget(Redis.from_url(redis_server.url), "t:changeflow:changeflow", "")
        store = LeaseStore(target, worker_id, lease, timeout=1.0)
        feeds = PublishingFeeds()
        shared = TableSharing(store, lease, feeds, {"id": worker_id})
        for stream in streams:
            shared.add(stream, appeared=False)
        discovered = asyncio.Event()
        discovered.set()
        shared.start(discovered)
        return shared, feeds

    a, feeds_a = worker("a", ["db.a"])
    await feeds_a.until(lambda: feeds_a.following() == {"db.a"}, 5)
    b, _ = worker("b", [])
    await asyncio.wait_for(b.ready.wait(), 5)
    assert not await b.announced_elsewhere("db.a")  # followed, not caught up
    assert not await a.announced_elsewhere("db.a")  # its own: not another worker's
    assert not await b.announced_elsewhere("db.none")  # nobody holds it
    feeds_a.caught_up = True
    a.publish_soon()
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    while not await b.announced_elsewhere("db.a"):
        assert loop.time() - asked_at < 1.0, "not published at once"
        await asyncio.sleep(0.01)
    await a.stop()
    await b.stop()
