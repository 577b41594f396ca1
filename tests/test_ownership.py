"""Which tables a worker follows (``worker/ownership.py``): its decisions, without I/O.

The sole owner (one worker) and the sync routing of the leased ownership (several
workers) against stand-ins; the leases themselves are ``test_table_sharing.py``,
workers together ``bridge/test_workers.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer
from django.test import override_settings
from redis.asyncio import Redis

from changeflow_channels.conf import get_settings
from changeflow_channels.worker.leases import LeaseStore, RedisTarget
from changeflow_channels.worker.ownership import (
    Leased,
    SoleOwner,
    SyncRoute,
    fence_for,
    ownership_for,
    worker_sync_channel,
)
from changeflow_channels.worker.table_sharing import Fence, TableSharing


class Feeds:
    """A recording ``FeedControl``."""

    def __init__(self) -> None:
        self.started: list[tuple[str, bool]] = []

    def start_feed(self, stream: str, announce_initial: bool) -> None:
        self.started.append((stream, announce_initial))

    async def stop_feed(self, stream: str) -> None:
        raise AssertionError("not expected")

    def drop_feed(self, stream: str) -> None:
        raise AssertionError("not expected")

    def is_following(self, stream: str) -> bool:
        return any(started == stream for started, _ in self.started)

    def published_state(self) -> dict[str, Any]:
        return {}


async def test_the_sole_owner_follows_every_watched_table_at_once_and_answers_every_sync():
    feeds = Feeds()
    owner = SoleOwner(feeds)
    assert owner.ready.is_set()  # nothing to wait for
    assert (owner.shared, owner.own_sync_channel) == (False, None)
    owner.start(asyncio.Event())
    owner.add("d.old", appeared=False)
    owner.add("d.new", appeared=True)
    assert feeds.started == [("d.old", False), ("d.new", True)]
    assert owner.holds("d.old") and owner.holds("d.anything")
    assert not owner.held_elsewhere("d.old")
    assert await owner.route_sync("d.old", {"forwarded": False}) is SyncRoute.HERE
    owner.remove("d.old")  # the flow drops the feed itself
    owner.stop_acquiring()
    await owner.stop()
    assert feeds.started == [("d.old", False), ("d.new", True)]


async def test_a_fence_lets_a_stream_be_sent_until_its_deadline_only_when_enforced():
    now = asyncio.get_running_loop().time()
    fence = Fence()
    fence.until.update({"d.safe": now + 60, "d.late": now - 1})
    assert [fence.may_send(s) for s in ("d.safe", "d.late", "d.other")] == [True, False, False]
    assert Fence(enforced=False).may_send("d.other")
    assert not fence_for(None).enforced


class Sharing:
    """The part of ``TableSharing`` that sync routing asks."""

    worker_id = "me"

    def __init__(self, watched: set[str], held: set[str], holders: dict[str, str | None]):
        self.ready = asyncio.Event()
        self.watched, self.held, self.holders = watched, held, holders
        self.asked: list[str] = []

    def watches(self, stream: str) -> bool:
        return stream in self.watched

    def holds(self, stream: str) -> bool:
        return stream in self.held

    async def holder(self, stream: str) -> str | None:
        self.asked.append(stream)
        return self.holders.get(stream)


@pytest.mark.parametrize(
    ("stream", "message", "route", "asked"),
    [
        ("d.unwatched", {}, SyncRoute.HERE, []),  # answered from RethinkDB, as with one worker
        ("d.mine", {}, SyncRoute.HERE, []),
        ("d.theirs", {}, SyncRoute.FORWARDED, ["d.theirs"]),
        ("d.theirs", {"forwarded": True}, SyncRoute.UNAVAILABLE, []),  # never forwarded twice
        ("d.theirs", None, SyncRoute.UNAVAILABLE, []),  # asked in process: nothing to forward
        ("d.vacant", {}, SyncRoute.UNAVAILABLE, ["d.vacant"]),  # being taken over
        ("d.stale", {}, SyncRoute.UNAVAILABLE, ["d.stale"]),  # ours in Redis, fenced here
    ],
)
async def test_a_sync_request_is_answered_by_the_holder_of_its_table(stream, message, route, asked):
    layer = InMemoryChannelLayer()
    sharing = Sharing(
        watched={"d.mine", "d.theirs", "d.vacant", "d.stale"},
        held={"d.mine"},
        holders={"d.theirs": "other", "d.vacant": None, "d.stale": "me"},
    )
    leased = Leased(sharing, layer, "changeflow")  # type: ignore[arg-type]
    assert leased.own_sync_channel == "changeflow.sync.me"
    assert await leased.route_sync(stream, message) is route
    assert sharing.asked == asked
    if route is SyncRoute.FORWARDED:
        forwarded = await layer.receive(worker_sync_channel("changeflow", "other"))
        assert forwarded == {**message, "forwarded": True}


def test_leases_make_a_leased_ownership_sharing_the_fence_and_none_a_sole_owner():
    with override_settings(CHANGEFLOW_LEASE_TIME=3):
        settings = get_settings()
    feeds = Feeds()
    sole = ownership_for(
        None, fence_for(None), feeds, settings=settings, channel_layer=None, watch=["*"]
    )
    assert isinstance(sole, SoleOwner)
    target = RedisTarget(Redis(), "t:changeflow:changeflow", "unused")  # never connected
    store = LeaseStore(target, "w1", 3.0, timeout=0.6)
    fence = fence_for(store)
    leased = ownership_for(
        store, fence, feeds, settings=settings, channel_layer=None, watch=["shop.*"]
    )
    assert isinstance(leased, Leased) and leased.shared
    assert isinstance(leased.sharing, TableSharing)
    assert leased.sharing.fence is fence and fence.enforced
    assert leased.sharing.lease_time == 3.0
    assert leased.sharing.info["watch"] == ["shop.*"]
    assert leased.own_sync_channel == leased.sharing.info["sync_channel"]
    assert leased.own_sync_channel == f"{settings.channel}.sync.w1"
    assert leased.ready is leased.sharing.ready
