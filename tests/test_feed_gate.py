"""The gate before every push's write (issue 14, item 1): a ready feed will announce it.

The feeds and the ownership are stand-ins (whether a feed caught up, what another
worker published); RethinkDB is the test's (the gate asks it whether the table exists).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from changeflow_channels.worker import feed_gate
from changeflow_channels.worker.feed_gate import FeedGate
from changeflow_channels.worker.watch import WatchPatterns


class Feed:
    def __init__(self, caught_up: bool) -> None:
        self.caught_up = caught_up


class Following:
    """``TableFeeds`` as the gate sees it: the watched tables and their feeds."""

    def __init__(self) -> None:
        self.watched: dict[str, Any] = {}
        self.feeds: dict[str, Feed] = {}

    def feed(self, stream: str) -> Feed | None:
        return self.feeds.get(stream)


class Ownership:
    """One worker (``holds`` everything) or another worker's table, as published."""

    def __init__(self, *, held_here: bool = True) -> None:
        self.held_here = held_here
        self.published_ready = False
        self.asked = 0

    def holds(self, stream: str) -> bool:
        return self.held_here

    async def announced_elsewhere(self, stream: str) -> bool:
        self.asked += 1
        return self.published_ready


class Tables:
    def __init__(self, r: Any) -> None:
        self.r = r
        self.created: list[tuple[str, str]] = []

    async def ensure(self, conn: Any, database: str, table: str) -> None:
        self.created.append((database, table))
        await self.r.db(database).table_create(table).run(conn)


@pytest.fixture
def gate_parts(ar, dbname):
    following, ownership, tables = Following(), Ownership(), Tables(ar)
    gate = FeedGate(ar, WatchPatterns([f"{dbname}.*"]), following, ownership, tables)  # type: ignore[arg-type]
    return gate, following, ownership, tables


def soon(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


async def test_a_table_not_watched_or_whose_feed_caught_up_goes_at_once(gate_parts, aconn, dbname):
    gate, following, _, tables = gate_parts
    assert await gate.open(aconn, "elsewhere", "t", soon())
    following.watched[f"{dbname}.t"] = ()
    following.feeds[f"{dbname}.t"] = Feed(caught_up=True)
    assert await gate.open(aconn, dbname, "t", soon())
    assert tables.created == []


async def test_a_missing_table_is_created_then_written_once_its_feed_caught_up(
    gate_parts, aconn, dbname
):
    gate, following, _, tables = gate_parts
    stream = f"{dbname}.fresh"
    opened = asyncio.ensure_future(gate.open(aconn, dbname, "fresh", soon()))
    await asyncio.sleep(0.2)
    assert tables.created == [(dbname, "fresh")]  # created first, then waited for
    assert not opened.done()
    following.watched[stream] = ()
    following.feeds[stream] = Feed(caught_up=False)  # discovered, its feed opening
    await asyncio.sleep(0.1)
    assert not opened.done()
    following.feeds[stream].caught_up = True
    assert await asyncio.wait_for(opened, 2)


async def test_a_table_another_worker_holds_goes_once_its_feed_is_published_ready(
    ar, aconn, dbname
):
    following, ownership, tables = Following(), Ownership(held_here=False), Tables(ar)
    gate = FeedGate(ar, WatchPatterns(["*"]), following, ownership, tables)  # type: ignore[arg-type]
    await ar.db(dbname).table_create("theirs").run(aconn)
    following.watched[f"{dbname}.theirs"] = ()
    opened = asyncio.ensure_future(gate.open(aconn, dbname, "theirs", soon()))
    await asyncio.sleep(0.3)
    assert not opened.done() and ownership.asked >= 2  # asked again while not ready
    ownership.published_ready = True
    assert await asyncio.wait_for(opened, 2)
    asked = ownership.asked
    assert await gate.open(aconn, dbname, "theirs", soon())  # seen ready just now
    assert ownership.asked == asked


async def test_no_ready_feed_in_time_means_no_write(gate_parts, aconn, dbname, monkeypatch):
    monkeypatch.setattr(feed_gate, "LOCAL_POLL", 0.01)
    gate, following, _, _ = gate_parts
    following.watched[f"{dbname}.slow"] = ()
    following.feeds[f"{dbname}.slow"] = Feed(caught_up=False)
    started = time.monotonic()
    assert not await gate.open(aconn, dbname, "slow", soon(0.3))
    assert 0.25 <= time.monotonic() - started < 2


async def test_a_known_table_dropped_meanwhile_is_created_again(
    gate_parts, ar, aconn, dbname, monkeypatch
):
    """The table was followed, then dropped: its feed ended before discovery forgot it.
    The push creates it again (a feed opens on it), instead of waiting for a feed that
    cannot open on a table that is not there, and being answered unavailable."""
    monkeypatch.setattr(feed_gate, "RECHECK", 0.05)
    gate, following, _, tables = gate_parts
    stream = f"{dbname}.gone"
    following.watched[stream] = ()  # still known; no feed any more (it ended)
    opened = asyncio.ensure_future(gate.open(aconn, dbname, "gone", soon()))
    deadline = time.monotonic() + 5
    while tables.created != [(dbname, "gone")]:
        assert time.monotonic() < deadline, "the dropped table was not created again"
        await asyncio.sleep(0.02)
    following.feeds[stream] = Feed(caught_up=True)  # discovered again, its feed ready
    assert await asyncio.wait_for(opened, 2)
