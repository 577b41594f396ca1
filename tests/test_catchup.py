"""Bounded sync traffic on the worker's side (issue 14, item 6; case 6).

After a Redis restart every subscription asks to resync at once. Identical requests
are answered once, a bounded number at a time, a large table is read once for
all of them, and every answer travels in pages within ``CHANGEFLOW_BATCH_BYTES``.

The first tests play ``Flow`` with a stand-in (no I/O: what is tested is the
catch-up server's scheduling); the last ones run a real ``Flow`` on RethinkDB.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from changeflow_channels.conf import get_settings
from changeflow_channels.sync import SYNC_RESULT_TYPE, SyncPages, SyncRequest, answer_pages
from changeflow_channels.worker.catchup import SYNC_CONCURRENCY, Catchup
from changeflow_channels.worker.flow import Flow

from .polling import poll_until

PAGE_BYTES = 4096


class StandInFlow:
    """Answers like ``Flow.sync`` once ``release`` is set; counts what it is asked."""

    def __init__(self, documents: int = 3, forward: bool = False) -> None:
        self.settings = SimpleNamespace(batch_bytes=PAGE_BYTES)
        self.release = asyncio.Event()
        self.ready = asyncio.Event()  # the feeds: loaded (set unless a test says otherwise)
        self.ready.set()
        self.asked: list[SyncRequest] = []
        self.running = 0
        self.most = 0
        self.documents = documents
        self.forward = forward

    async def sync_ready(self, request: SyncRequest) -> None:
        if request.table.startswith("restarting"):
            await self.ready.wait()

    async def sync(self, request: SyncRequest, message: dict[str, Any]) -> dict[str, Any] | None:
        self.asked.append(request)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        if self.forward:
            return None
        return {
            "type": SYNC_RESULT_TYPE,
            "id": request.id,
            "database": request.database,
            "table": request.table,
            "epoch": "e1",
            "seq": 9,
            "changes": None,
            "resync": None,
            "snapshot": {
                "documents": [{"id": n, "text": "x" * 100} for n in range(self.documents)],
                "truncated": False,
            },
        }


class Replies:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.changed = asyncio.Event()

    async def __call__(self, channel: str, message: dict[str, Any]) -> None:
        self.sent.append((channel, message))
        self.changed.set()

    def answers(self) -> dict[tuple[str, Any], dict[str, Any]]:
        """The whole answers each (channel, id) got, pages put back together."""
        pages: dict[tuple[str, Any], SyncPages] = {}
        whole: dict[tuple[str, Any], dict[str, Any]] = {}
        for channel, message in self.sent:
            target = (channel, message["id"])
            joined = pages.setdefault(target, SyncPages()).add(message)
            if joined is not None:
                assert target not in whole, f"{target} answered twice"
                whole[target] = joined
        return whole

    async def until(self, count: int) -> None:
        async def enough() -> int:
            return len(self.answers())

        await poll_until(enough, lambda n: n >= count, 5, lambda n: f"{n} of {count} answers")


def request(channel: str, request_id: Any, *, table: str = "t", **fields: Any) -> dict:
    return {
        "type": "changeflow.sync",
        "database": "db",
        "table": table,
        "reply_channel": channel,
        "id": request_id,
        "since": None,
        "snapshot": True,
        **fields,
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_identical_requests_waiting_for_one_answer_are_answered_once_each_with_its_id():
    flow, replies = StandInFlow(), Replies()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    for n in range(50):
        catchup.take(request(f"daphne!{n}", f"id-{n}"))
    catchup.take(request("daphne!7", "id-7"))  # a resend of one of them: no second answer
    await settle()
    flow.release.set()
    await replies.until(50)
    assert len(flow.asked) == 1
    answers = replies.answers()
    assert set(answers) == {(f"daphne!{n}", f"id-{n}") for n in range(50)}
    assert all(
        answer["seq"] == 9 and len(answer["snapshot"]["documents"]) == 3
        for answer in answers.values()
    )


async def test_a_request_after_the_answer_was_computed_gets_an_answer_of_its_own():
    flow, replies = StandInFlow(), Replies()
    flow.release.set()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    catchup.take(request("daphne!1", 1))
    await replies.until(1)
    catchup.take(request("daphne!2", 2))
    await replies.until(2)
    assert len(flow.asked) == 2


async def test_different_requests_are_not_joined():
    flow, replies = StandInFlow(), Replies()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    catchup.take(request("daphne!1", 1))
    catchup.take(request("daphne!2", 2, table="other"))
    catchup.take(request("daphne!3", 3, since={"epoch": "e1", "seq": 4}))
    catchup.take(request("daphne!4", 4, snapshot=False))
    await settle()
    flow.release.set()
    await replies.until(4)
    assert len(flow.asked) == 4


async def test_at_most_a_bounded_number_of_answers_at_a_time():
    flow, replies = StandInFlow(), Replies()
    catchup = Catchup(flow, replies, concurrency=4)  # type: ignore[arg-type]
    for n in range(40):
        catchup.take(request(f"daphne!{n}", n, table=f"t{n}"))
    await settle()
    assert flow.running == 4  # the others wait their turn
    flow.release.set()
    await replies.until(40)
    assert flow.most == 4 and len(flow.asked) == 40


async def test_waiting_for_a_restarting_feed_takes_no_turn():
    flow, replies = StandInFlow(), Replies()
    flow.ready.clear()  # the feeds of the tables "restarting..." are loading
    flow.release.set()
    catchup = Catchup(flow, replies, concurrency=2)  # type: ignore[arg-type]
    for n in range(4):
        catchup.take(request(f"daphne!{n}", n, table=f"restarting{n}"))
    catchup.take(request("daphne!quiet", "quiet", table="quiet"))
    await replies.until(1)  # answered while the others still wait
    assert list(replies.answers()) == [("daphne!quiet", "quiet")]
    flow.ready.set()
    await replies.until(5)


async def test_an_answer_larger_than_the_bound_travels_in_pages_within_it():
    flow, replies = StandInFlow(documents=200), Replies()
    flow.release.set()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    catchup.take(request("daphne!1", 1))
    catchup.take(request("daphne!2", 2))
    await replies.until(2)
    assert len(replies.sent) > 2
    for _, page in replies.sent:
        assert len(json.dumps(page)) <= PAGE_BYTES
        assert page["type"] == SYNC_RESULT_TYPE and isinstance(page["part"], int)
    for answer in replies.answers().values():
        assert [doc["id"] for doc in answer["snapshot"]["documents"]] == list(range(200))


async def test_joined_requests_for_a_table_followed_elsewhere_are_forwarded_each():
    flow, replies = StandInFlow(forward=True), Replies()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    for n in range(3):
        catchup.take(request(f"daphne!{n}", n))
    await settle()
    flow.release.set()

    async def asked() -> int:
        return len(flow.asked)

    await poll_until(asked, lambda n: n == 3, 5, lambda n: f"asked {n} times")
    assert replies.sent == []  # the holder answers


def test_pages_keep_the_header_and_split_changes_and_documents_in_order():
    answer = {
        "type": SYNC_RESULT_TYPE,
        "id": "r",
        "epoch": "e1",
        "seq": 30,
        "changes": [{"seq": n, "text": "y" * 300} for n in range(1, 31)],
        "resync": None,
        "snapshot": None,
    }
    pages = list(answer_pages(answer, 2048))
    assert len(pages) > 1 and [page["part"] for page in pages] == list(range(len(pages)))
    assert [page["last"] for page in pages] == [False] * (len(pages) - 1) + [True]
    assert all(len(json.dumps(page)) <= 2048 and page["seq"] == 30 for page in pages)
    collected = SyncPages()
    assert [collected.add(page) for page in pages[:-1]] == [None] * (len(pages) - 1)
    assert collected.add(pages[-1]) == answer
    assert list(answer_pages(answer, 1_000_000)) == [answer]  # fits: as it is, no part


# -- a real Flow on RethinkDB ---------------------------------------------------------------


class CountingFlow(Flow):
    reads = 0
    # When set: the read returns only once ``hold`` is set (``read_done`` says it has read).
    hold: asyncio.Event | None = None
    read_done: asyncio.Event | None = None

    async def _read_table(self, database: str, table: str) -> dict[str, Any]:
        self.reads += 1
        if self.hold is not None and self.read_done is not None:
            read = await super()._read_table(database, table)
            self.read_done.set()
            await self.hold.wait()  # read, and slow to come back: the table changes meanwhile
            return read
        await asyncio.sleep(0.2)  # a large table takes a while: others ask meanwhile
        return await super()._read_table(database, table)


@pytest.fixture
async def flow(rethinkdb_target, dbname, conn, r) -> AsyncIterator[CountingFlow]:
    r.db(dbname).table_create("big").run(conn)
    r.db(dbname).table("big").insert([{"id": n, "text": "z" * 200} for n in range(60)]).run(conn)
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CHANGEFLOW_RETHINKDB=rethinkdb_target.url,
        CHANGEFLOW_WATCH=[f"{dbname}.*"],
        CHANGEFLOW_SNAPSHOT_LIMIT=50,  # the table is larger: read from RethinkDB
        CHANGEFLOW_BATCH_BYTES=4096,
    ):
        instance = CountingFlow(get_settings(), get_channel_layer(), [])
        await instance.start()
        assert await instance.wait_ready(timeout=20)

        async def following() -> bool:  # a real server may report the new table later
            feed = instance.following.feed(f"{dbname}.big")
            return feed is not None and feed.caught_up

        await poll_until(following, bool, 20, lambda _: f"{dbname}.big not followed")
        yield instance
        await instance.stop()


async def test_a_large_tables_snapshot_is_read_once_for_requests_asking_meanwhile(flow, dbname):
    replies = Replies()
    catchup = Catchup(flow, replies)
    for n in range(20):
        # Different positions (as many as are answered at once): not joined, but one
        # read serves them all; the others are the same request as the first: joined.
        since = {"epoch": "gone", "seq": n} if 0 < n < SYNC_CONCURRENCY else None
        catchup.take(request(f"daphne!{n}", n, database=dbname, table="big", since=since))
    await replies.until(20)
    assert flow.reads == 1
    for answer in replies.answers().values():
        snapshot = answer["snapshot"]
        assert snapshot["truncated"] is True and len(snapshot["documents"]) == 50
    assert all(len(json.dumps(page)) <= 4096 for _, page in replies.sent)
    catchup.take(request("daphne!later", "later", database=dbname, table="big"))
    await replies.until(21)
    assert flow.reads == 2  # a request after the read: read again


async def test_a_read_begun_before_the_position_a_request_is_answered_at_is_not_shared(
    flow, dbname, r, conn
):
    """A snapshot read from RethinkDB may serve only requests answered at the position
    it began at: one answered at a later position, given a read from before its
    changes, would claim them in its snapshot and never get them (skipped silently)."""

    async def followed() -> Any:
        return flow.following.feed(f"{dbname}.big")

    # A table the worker has not found yet is answered empty, without a read.
    feed = await poll_until(followed, lambda feed: feed and feed.caught_up, 10, str)
    flow.hold, flow.read_done = asyncio.Event(), asyncio.Event()
    replies = Replies()
    catchup = Catchup(flow, replies)
    catchup.take(request("daphne!a", "a", database=dbname, table="big"))
    await asyncio.wait_for(flow.read_done.wait(), 10)
    before = feed.state.seq
    update = r.db(dbname).table("big").update({"text": "new"})
    await asyncio.get_running_loop().run_in_executor(None, update.run, conn)

    async def position() -> int:
        return feed.state.seq

    await poll_until(position, lambda seq: seq >= before + 60, 10, lambda seq: f"at {seq}")
    since = {"epoch": "gone", "seq": 1}  # not the same request: not joined to the first
    catchup.take(request("daphne!b", "b", database=dbname, table="big", since=since))
    await settle()
    flow.hold.set()
    await replies.until(2)
    answers = replies.answers()
    first, later = answers[("daphne!a", "a")], answers[("daphne!b", "b")]
    assert first["seq"] == before and later["seq"] == before + 60
    assert {doc["text"] for doc in later["snapshot"]["documents"]} == {"new"}
    assert flow.reads == 2


async def test_an_answer_whose_page_could_not_be_sent_sends_no_more_of_its_pages():
    """A reply channel that stayed full (``reply`` gave up: about 5 s) makes the rest
    of that answer useless (the consumer asks again): its other pages must not hold
    up the answers still to send, each as long again."""

    class FullFor(Replies):
        async def __call__(self, channel: str, message: dict[str, Any]) -> bool:
            await super().__call__(channel, message)
            return channel != "stuck!full"

    flow, replies = StandInFlow(documents=200), FullFor()
    flow.release.set()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    catchup.take(request("stuck!full", 1))
    catchup.take(request("daphne!2", 2))
    await replies.until(1)
    await settle()
    tried = [page["part"] for channel, page in replies.sent if channel == "stuck!full"]
    assert tried == [0]
    assert list(replies.answers()) == [("daphne!2", 2)]


async def test_joined_requests_on_a_process_whose_channel_stayed_full_are_not_tried_each():
    """channels_redis keeps one Redis list per Daphne process: once an answer could not
    be sent to one of its channels (about 5 s), the joined requests of that process
    are not tried one by one (minutes for a storm of them); other processes' are."""

    class FullProcess(Replies):
        async def __call__(self, channel: str, message: dict[str, Any]) -> bool:
            await super().__call__(channel, message)
            return not channel.startswith("full!")

    flow, replies = StandInFlow(), FullProcess()
    catchup = Catchup(flow, replies)  # type: ignore[arg-type]
    for n in range(20):
        catchup.take(request(f"full!{n}", f"f{n}"))
        catchup.take(request(f"ok!{n}", f"o{n}"))
    await settle()
    flow.release.set()
    await replies.until(20)
    await settle()
    assert len([channel for channel, _ in replies.sent if channel.startswith("full!")]) == 1
    answered = {target for target in replies.answers() if target[0].startswith("ok!")}
    assert answered == {(f"ok!{n}", f"o{n}") for n in range(20)}
