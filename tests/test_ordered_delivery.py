"""The consumer's delivery rules, with the test playing the worker on the channel layer.

A real (in-memory) channel layer and a real consumer; the test sends the change
messages a worker would send (with gaps, repeats and new epochs) and answers
the consumer's sync requests itself.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.sync import SyncRequest
from changeflow_channels.worker.table_state import TableState, sync_answer

# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
pytestmark = pytest.mark.django_db

SETTINGS = {
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
    "CHANGEFLOW_SYNC_TIMEOUT": 0.5,
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
}


def change(seq: int, epoch: str = "e1", doc_id: int | None = None) -> dict:
    return {
        "type": "changeflow.change",
        "database": "db",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": {"id": doc_id or seq}},
        "epoch": epoch,
        "seq": seq,
    }


@pytest.fixture
async def client():
    with override_settings(**SETTINGS):
        communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        connected, _ = await communicator.connect()
        assert connected
        yield communicator
        await communicator.disconnect()


async def frames(communicator, count: int) -> list[dict]:
    return [await communicator.receive_json_from(timeout=3) for _ in range(count)]


async def subscribe(communicator, **options) -> None:
    await communicator.send_json_to({"action": "subscribe", "stream": "db.t", "id": 1, **options})
    assert (await communicator.receive_json_from(timeout=3))["event"] == "subscribed"


async def worker_request() -> dict:
    return await asyncio.wait_for(get_channel_layer().receive("changeflow.sync"), 3)


async def test_in_order_repeats_dropped_and_a_gap_filled_from_the_history(client):
    layer = get_channel_layer()
    await subscribe(client)
    await layer.group_send("db.t", change(1))
    await layer.group_send("db.t", change(1))  # a repeat
    await layer.group_send("db.t", change(3))  # 2 was lost
    request = await worker_request()
    assert request["type"] == "changeflow.sync"
    assert request["since"] == {"epoch": "e1", "seq": 1}
    await layer.send(
        request["reply_channel"],
        {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e1",
            "seq": 3,
            "changes": [change(2), change(3)],
            "resync": None,
            "snapshot": None,
        },
    )
    await layer.group_send("db.t", change(4))
    got = await frames(client, 4)
    assert [(f["event"], f["seq"]) for f in got] == [
        ("change", 1),
        ("change", 2),
        ("change", 3),
        ("change", 4),
    ]


async def test_a_new_epoch_is_a_resync_and_a_snapshot_subscription_gets_a_fresh_snapshot(client):
    layer = get_channel_layer()
    await subscribe(client, snapshot=True)
    request = await worker_request()
    assert request["since"] is None and request["snapshot"] is True
    await layer.send(
        request["reply_channel"],
        {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e1",
            "seq": 5,
            "changes": None,
            "resync": None,
            "snapshot": {"documents": [{"id": 1}], "truncated": False},
        },
    )
    await layer.group_send("db.t", change(5))  # already in the snapshot
    await layer.group_send("db.t", change(6))
    await layer.group_send("db.t", change(1, epoch="e2", doc_id=7))  # the worker restarted
    request = await worker_request()
    await layer.send(
        request["reply_channel"],
        {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e2",
            "seq": 1,
            "changes": None,
            "resync": None,
            "snapshot": {"documents": [{"id": 1}, {"id": 6}, {"id": 7}], "truncated": False},
        },
    )
    got = await frames(client, 4)
    assert got[0] == {
        "event": "snapshot",
        "stream": "db.t",
        "documents": [{"id": 1}],
        "truncated": False,
        "epoch": "e1",
        "seq": 5,
    }
    assert (got[1]["event"], got[1]["seq"]) == ("change", 6)
    assert got[2] == {"event": "resync", "stream": "db.t", "reason": "epoch_changed"}
    assert (got[3]["event"], got[3]["epoch"], got[3]["seq"]) == ("snapshot", "e2", 1)


async def test_a_worker_that_does_not_answer_becomes_a_resync(client):
    layer = get_channel_layer()
    await subscribe(client)
    await layer.group_send("db.t", change(1))
    await layer.group_send("db.t", change(5))  # a gap nobody will fill
    await worker_request()
    got = await frames(client, 3)  # after CHANGEFLOW_SYNC_TIMEOUT
    assert [f["event"] for f in got] == ["change", "resync", "change"]
    assert got[1]["reason"] == "unavailable" and got[2]["seq"] == 5


def batch(*seqs: int, epoch: str = "e1") -> dict:
    return {
        "type": "changeflow.batch",
        "database": "db",
        "table": "t",
        "changes": [change(seq, epoch) for seq in seqs],
    }


async def test_a_batch_that_continues_a_plain_subscription_goes_whole(client):
    """One batch frame, its changes in order, the position after it kept: a batch
    that skips ahead is held for a sync (the rules per change), and so is one
    after a named subscription joined."""
    layer = get_channel_layer()
    await subscribe(client)
    await layer.group_send("db.t", batch(1, 2, 3))
    await layer.group_send("db.t", batch(4, 5))
    got = await frames(client, 2)
    assert [f["event"] for f in got] == ["batch", "batch"]
    assert [e["seq"] for f in got for e in f["events"]] == [1, 2, 3, 4, 5]
    assert got[0]["events"][0] == {
        "event": "change",
        "stream": "db.t",
        "type": "add",
        "old_val": None,
        "new_val": {"id": 1},
        "epoch": "e1",
        "seq": 1,
    }
    await layer.group_send("db.t", batch(7, 8))  # 6 was lost
    request = await worker_request()
    assert request["since"] == {"epoch": "e1", "seq": 5}
    await layer.send(
        request["reply_channel"],
        {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e1",
            "seq": 8,
            "changes": [change(6), change(7), change(8)],
            "resync": None,
            "snapshot": None,
        },
    )
    got = await frames(client, 3)
    assert [(f["event"], f["seq"]) for f in got] == [("change", 6), ("change", 7), ("change", 8)]
    await subscribe(client, sub="named")
    await layer.group_send("db.t", batch(9, 10))
    (got,) = await frames(client, 1)
    assert [(e["seq"], e.get("sub")) for e in got["events"]] == [
        (9, None),
        (9, "named"),
        (10, None),
        (10, "named"),
    ]


async def test_bad_since_is_refused(client):
    await client.send_json_to(
        {"action": "subscribe", "stream": "db.t", "since": {"seq": -1}, "id": 9}
    )
    answer = await client.receive_json_from(timeout=3)
    assert (answer["event"], answer["code"], answer["id"]) == ("error", "bad_request", 9)


def message(seq: int) -> dict:
    return {**change(seq), "epoch": "e"}


def request(since=None, snapshot=False) -> SyncRequest:
    return SyncRequest("db", "t", "reply", "r1", since, snapshot)


def test_sync_answer_replays_resyncs_and_snapshots():
    state = TableState("id", history_size=3, snapshot_limit=10)
    state.reset("e", mirrored=True)
    for seq in range(1, 6):
        state.record(message(seq))
    assert [c["seq"] for c in sync_answer(request(("e", 2)), state)["changes"]] == [3, 4, 5]
    assert sync_answer(request(("e", 5)), state)["changes"] == []
    assert sync_answer(request(("e", 1)), state)["resync"] == "history_exceeded"
    assert sync_answer(request(("e", 9)), state)["resync"] == "no_position"
    answer = sync_answer(request(("old", 1), snapshot=True), state)
    assert answer["resync"] == "epoch_changed"
    assert answer["snapshot"] == {"documents": [{"id": n} for n in range(1, 6)], "truncated": False}
    assert (answer["epoch"], answer["seq"]) == ("e", 5)
    empty = sync_answer(request(None, snapshot=True), None)
    assert (empty["epoch"], empty["seq"], empty["snapshot"]["documents"]) == (None, 0, [])


def test_the_mirror_is_dropped_past_the_snapshot_limit():
    state = TableState("id", history_size=10, snapshot_limit=2)
    state.reset("e", mirrored=True)
    for seq in range(1, 4):
        state.record(message(seq))
    assert state.documents() is None
