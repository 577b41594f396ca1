"""The limits against cheap requests with expensive answers (issue 15, item 4), without
I/O: what subscribing costs a connection (``web.limits.SubscribeLimits``), and how the
worker paces a sync answer's pages (``worker.sync_pacing``, ``worker.catchup``).
tests/security/test_amplification.py attacks the running site."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from changeflow_channels.web.limits import RateLimited, SubscribeLimits, TokenBucket
from changeflow_channels.web.protocol import RATE_LIMITED
from changeflow_channels.worker import sync_pacing
from changeflow_channels.worker.catchup import Catchup
from changeflow_channels.worker.sync_pacing import Pacer, StreamTurns

from .test_catchup import Replies, StandInFlow, request


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_burst():
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait() == 0 and bucket.take() and not bucket.take()
    clock.now += 60
    assert bucket.available() == 3.0  # never more than the burst


def test_every_subscribe_costs_and_a_snapshot_or_resume_costs_more():
    clock = Clock()
    limits = SubscribeLimits(subscribe_rate=10.0, sync_rate=1.0, sync_burst=5, clock=clock)
    for _ in range(5):
        limits.spend(sync=True)
    with pytest.raises(RateLimited) as refused:
        limits.spend(sync=True, request_id=7)
    assert refused.value.code == RATE_LIMITED and refused.value.request_id == 7
    assert refused.value.retry_after == pytest.approx(1.0)
    assert "snapshots or resumes" in refused.value.message
    # Plain subscribes still go, until their own burst (twice the rate) is spent.
    for _ in range(15):
        limits.spend(sync=False)
    with pytest.raises(RateLimited) as refused:
        limits.spend(sync=False)
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.now += 1.0
    limits.spend(sync=True)  # a second later: one more of each


def test_a_refused_subscribe_spends_nothing():
    clock = Clock()
    limits = SubscribeLimits(subscribe_rate=10.0, sync_rate=1.0, sync_burst=1, clock=clock)
    limits.spend(sync=True)
    for _ in range(50):  # refused for the sync bucket: the subscribe bucket keeps its tokens
        with pytest.raises(RateLimited):
            limits.spend(sync=True)
    assert limits.subscribes.available() == pytest.approx(19.0)


def test_one_snapshot_or_resume_of_a_stream_at_a_time_per_connection():
    clock = Clock()
    limits = SubscribeLimits(subscribe_rate=10.0, sync_rate=1.0, sync_burst=5, clock=clock)
    with pytest.raises(RateLimited) as refused:
        limits.spend(sync=True, busy=True, request_id=3)
    assert refused.value.retry_after == 1.0 and "under way" in refused.value.message
    limits.spend(sync=False, busy=True)  # a plain subscribe asks the worker nothing
    assert limits.syncs.available() == 5 and limits.subscribes.available() == 19


async def test_a_stream_has_at_most_its_turns_and_others_are_not_held():
    turns = StreamTurns(per_stream=2)
    inside: dict[str, int] = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}
    release = asyncio.Event()

    async def hold(stream: str) -> None:
        async with turns(stream):
            inside[stream] += 1
            most[stream] = max(most[stream], inside[stream])
            await release.wait()
            inside[stream] -= 1

    tasks = [asyncio.ensure_future(hold("a")) for _ in range(5)]
    tasks.append(asyncio.ensure_future(hold("b")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert inside == {"a": 2, "b": 1} and turns.waiting("a") == 5
    release.set()
    await asyncio.gather(*tasks)
    assert most == {"a": 2, "b": 1}
    assert turns.waiting("a") == 0 and turns._turns == {}  # forgotten once idle


class FakeLayer:
    """channels_redis's shape, as far as the Pacer reads it: one sorted set per process
    (``daphne!``), scored by send time, holding what its consumers have not taken."""

    prefix = "asgi:"

    def __init__(self) -> None:
        self.waiting: list[tuple[float, Any]] = []  # (sent at, message), oldest first
        self.pages_most = 0

    def add(self, message: Any) -> None:
        self.waiting.append((time.time(), message))
        pages = sum(1 for _, waiting in self.waiting if waiting != "live")
        self.pages_most = max(self.pages_most, pages)

    def non_local_name(self, channel: str) -> str:
        return channel.partition("!")[0] + "!"

    def consistent_hash(self, channel: str) -> int:
        return 0

    def connection(self, index: int) -> Any:
        async def zcount(key: str, low: str, high: float) -> int:
            assert key == "asgi:daphne!" and low == "-inf"
            return sum(1 for sent_at, _ in self.waiting if sent_at <= high)

        return SimpleNamespace(zcount=zcount)


async def pacing(monkeypatch: Any, live: bool) -> FakeLayer:
    """Three snapshot answers of many pages to one Daphne process, which takes a message
    every 2 ms; with ``live``, a live change arrives for it every 3 ms too (a busy
    process: its set is seldom short)."""
    monkeypatch.setattr(sync_pacing, "PACE_EVERY", 0.001)
    layer = FakeLayer()
    flow = StandInFlow(documents=300)
    flow.channel_layer = layer  # type: ignore[attr-defined]
    flow.release.set()
    replies = Replies()

    async def reply(channel: str, page: dict[str, Any]) -> None:
        layer.add(page)
        await replies(channel, page)

    async def process() -> None:  # the Daphne process, oldest first
        while True:
            await asyncio.sleep(0.002)
            if layer.waiting:
                layer.waiting.pop(0)

    async def changes() -> None:
        while True:
            await asyncio.sleep(0.003)
            layer.add("live")

    running = [asyncio.ensure_future(process())]
    if live:
        running.append(asyncio.ensure_future(changes()))
    catchup = Catchup(flow, reply)  # type: ignore[arg-type]
    assert catchup._pacer.enabled
    for n in range(3):
        catchup.take(request(f"daphne!{n}", n, since={"epoch": "e1", "seq": n}))
    try:
        await replies.until(3)
    finally:
        for task in running:
            task.cancel()
    assert len(replies.sent) > 3 * sync_pacing.PAGES_AHEAD
    return layer


async def test_pages_go_only_as_fast_as_the_process_takes_them(monkeypatch):
    layer = await pacing(monkeypatch, live=False)
    # At most PAGES_AHEAD waiting, and one more per answer being sent (2 of a stream at once).
    assert layer.pages_most <= sync_pacing.PAGES_AHEAD + sync_pacing.SYNC_PER_STREAM


async def test_a_busy_process_with_live_changes_does_not_hold_the_pages_up(monkeypatch):
    """Its set is never short of messages; the pages wait only for the pages before them."""
    layer = await pacing(monkeypatch, live=True)
    assert layer.pages_most <= sync_pacing.PAGES_AHEAD + sync_pacing.SYNC_PER_STREAM


async def test_without_a_known_layer_nothing_is_paced():
    pacer = Pacer(object())
    assert not pacer.enabled
    for _ in range(10):
        pacer.sent("daphne!x")
        await asyncio.wait_for(pacer.room("daphne!x"), 1)
