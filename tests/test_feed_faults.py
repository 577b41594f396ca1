"""A table's feed against a misbehaving RethinkDB: half-open connections, restarts, drops.

The feed runs in the test's process against a RethinkDB of the test's own (a ReQL
test server, or a real process) with faults injected; the ping interval is
shortened so the half-open case takes a second.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from rethinkdb import RethinkDB

from changeflow_channels import rethink
from changeflow_channels.changes import EPOCH_TYPE
from changeflow_channels.rethink import new_driver
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.worker.feeds import TableFeed


class Sink:
    """The feed's changes (``messages``) and its epoch announcements (``epochs``)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.epochs: list[dict] = []
        self.arrived = asyncio.Event()

    async def __call__(self, message: dict) -> None:
        (self.epochs if message["type"] == EPOCH_TYPE else self.messages).append(message)
        self.arrived.set()

    async def wait_for(self, predicate, timeout: float = 10.0) -> dict:
        async def find() -> dict:
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(find(), timeout)


@pytest.fixture
def fast_pings(monkeypatch):
    monkeypatch.setattr(rethink, "PING_EVERY", 0.2)
    monkeypatch.setattr(rethink, "PING_TIMEOUT", 0.3)
    monkeypatch.setattr(rethink, "CONNECT_TIMEOUT", 0.5)


@pytest.fixture
async def followed(faulty_rethinkdb, fast_pings):
    """A table ``d.t`` followed by a TableFeed whose changes land in a Sink."""
    sync_r = RethinkDB()
    with sync_r.connect(port=faulty_rethinkdb.port) as conn:
        sync_r.db_create("d").run(conn)
        sync_r.db("d").table_create("t").run(conn)
    sink = Sink()
    feed = TableFeed(new_driver(), parse_rethinkdb_url(faulty_rethinkdb.url), "d", "t", sink)
    task = asyncio.ensure_future(feed.run())
    await asyncio.wait_for(feed.ready.wait(), 10)
    yield feed, sink
    feed.stop()
    await asyncio.wait_for(task, 10)


async def new_epoch(feed: TableFeed, old: str, timeout: float = 15.0) -> None:
    """Until the feed follows the table again, in an epoch after ``old``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while feed.state.epoch == old or not feed.caught_up:
        assert loop.time() < deadline, "the feed did not come back"
        await asyncio.sleep(0.02)


def insert(server, doc: dict) -> None:
    r = RethinkDB()
    with r.connect(port=server.port) as conn:
        r.db("d").table("t").insert(doc).run(conn)


async def test_a_half_open_connection_is_found_and_the_feed_resumes_in_a_new_epoch(
    faulty_rethinkdb, followed, caplog
):
    feed, sink = followed
    await asyncio.to_thread(insert, faulty_rethinkdb, {"id": 1})
    first = await sink.wait_for(lambda m: m["change"]["new_val"] == {"id": 1})
    caplog.set_level(logging.WARNING, "changeflow_channels")
    faulty_rethinkdb.freeze()  # connections stay open, nothing is answered
    loop = asyncio.get_running_loop()
    frozen_at = loop.time()
    while "did not answer a ping" not in caplog.text:
        assert loop.time() - frozen_at < 5, "the half-open connection was not noticed"
        await asyncio.sleep(0.05)
    faulty_rethinkdb.thaw()
    await new_epoch(feed, first["epoch"])
    await asyncio.to_thread(insert, faulty_rethinkdb, {"id": 2})
    second = await sink.wait_for(lambda m: m["change"]["new_val"] == {"id": 2})
    assert (second["epoch"], second["seq"]) == (feed.state.epoch, 1)


async def test_restarted_rethinkdb_means_a_new_epoch_with_the_documents_reloaded(
    faulty_rethinkdb, followed
):
    feed, sink = followed
    await asyncio.to_thread(insert, faulty_rethinkdb, {"id": 1})
    first = await sink.wait_for(lambda m: m["seq"] == 1)
    faulty_rethinkdb.restart(keep_data=True, down_for=0.3)
    await asyncio.to_thread(insert, faulty_rethinkdb, {"id": 2})  # while the feed is away
    await new_epoch(feed, first["epoch"])
    # The new epoch's documents include what was written while the feed was away.
    assert sorted(doc["id"] for doc in feed.state.documents()) == [1, 2]
    # Each epoch was announced once its feed caught up, the new one at once (issue 14, item 2).
    assert [(e["epoch"], e["seq"], e["since_creation"]) for e in sink.epochs] == [
        (first["epoch"], 0, False),
        (feed.state.epoch, 0, False),
    ]
    await asyncio.to_thread(insert, faulty_rethinkdb, {"id": 3})
    third = await sink.wait_for(lambda m: m["change"]["new_val"] == {"id": 3})
    assert (third["epoch"], third["seq"]) == (feed.state.epoch, 1)


async def test_dropping_the_table_ends_the_feed(faulty_rethinkdb, followed):
    feed, _ = followed
    task = next(t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "TableFeed.run")
    r = RethinkDB()
    with r.connect(port=faulty_rethinkdb.port) as conn:
        r.db("d").table_drop("t").run(conn)
    await asyncio.wait_for(task, 10)  # ended by itself, not by stop()
    assert not feed.stopping
