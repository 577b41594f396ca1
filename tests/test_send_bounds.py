"""What the consumer sends stays within CHANGEFLOW_MAX_SENT_FRAME_BYTES, and a change
that cannot be sent is never skipped silently (issue 14, item 5; cases 5 and 10).

The rules of splitting are tested as plain code (``protocol.pack``,
``protocol.snapshot_texts``); the consumer runs in-process on the in-memory channel
layer, and the test plays the worker (its change messages and sync answers), so
every frame the client must get is known exactly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.web.protocol import byte_size, encode, pack, snapshot_texts

pytestmark = pytest.mark.django_db

SETTINGS = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
    "CHANGEFLOW_SYNC_TIMEOUT": 600.0,
    "CHANGEFLOW_RECHECK_EVERY": 3600.0,
}


def change(seq: int, doc: Any, epoch: str = "e") -> dict[str, Any]:
    return {
        "type": "changeflow.change",
        "database": "db",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": doc},
        "epoch": epoch,
        "seq": seq,
    }


def documents(count: int, size: int) -> list[dict[str, Any]]:
    return [{"id": n, "pad": "é" * (size // 2)} for n in range(count)]  # 2 bytes a character


async def connect(snapshot: bool = False) -> WebsocketCommunicator:
    client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    connected, _ = await client.connect()
    assert connected
    await client.send_json_to({"action": "subscribe", "stream": "db.t", "snapshot": snapshot})
    assert (await client.receive_json_from())["event"] == "subscribed"
    return client


async def frames_until_quiet(client: WebsocketCommunicator) -> list[str]:
    """The texts of every frame sent until nothing comes for a while."""
    texts = []
    while not await client.receive_nothing(0.3):
        output = await client.receive_output(timeout=5)
        assert output["type"] == "websocket.send", output
        texts.append(output["text"])
    return texts


def events(texts: list[str]) -> list[dict[str, Any]]:
    """Frames as the protocol reads them: a batch's events one by one."""
    frames = [json.loads(text) for text in texts]
    return [event for frame in frames for event in frame.get("events", [frame])]


# -- the rules, without I/O ---------------------------------------------------------------


def test_pack_puts_frames_in_batches_within_the_bound_in_order():
    frames = [
        (encode({"event": "change", "seq": n, "pad": "x" * 300}), float(n)) for n in range(20)
    ]
    packed = pack(frames, 1000)
    assert all(byte_size(text) <= 1000 for text, _ in packed)
    assert len(packed) > 1
    assert [e["seq"] for e in events([text for text, _ in packed])] == list(range(20))
    assert packed[0][1] == 0.0  # a batch keeps its first frame's read_at
    assert pack(frames[:1], 1000) == frames[:1]  # alone, a frame stays itself
    assert pack([], 1000) == []


def test_a_snapshot_within_the_bound_is_one_frame_without_parts():
    frame = {"event": "snapshot", "stream": "db.t", "documents": documents(3, 10), "seq": 1}
    texts, left_out = snapshot_texts(frame, 10_000)
    assert (len(texts), left_out) == (1, 0)
    assert json.loads(texts[0]) == frame


def test_a_large_snapshot_comes_in_numbered_parts_within_the_bound():
    docs = [*documents(100, 1000), {"id": "huge", "pad": "x" * 20_000}, *documents(5, 10)]
    frame = {"event": "snapshot", "stream": "db.t", "documents": docs, "epoch": "e", "seq": 7}
    texts, left_out = snapshot_texts(frame, 10_000)
    assert left_out == 1  # larger than any frame: left out, and counted
    assert all(byte_size(text) <= 10_000 for text in texts)
    parts = [json.loads(text) for text in texts]
    assert [p["part"] for p in parts] == list(range(len(parts)))
    assert [p["last"] for p in parts] == [False] * (len(parts) - 1) + [True]
    assert all((p["epoch"], p["seq"], p["stream"]) == ("e", 7, "db.t") for p in parts)
    assert [d for p in parts for d in p["documents"]] == [d for d in docs if d["id"] != "huge"]


# -- the consumer --------------------------------------------------------------------------


async def test_a_snapshot_of_1000_documents_of_1200_bytes_comes_whole_in_frames_within_the_bound():
    """Case 10a: a snapshot within CHANGEFLOW_SNAPSHOT_LIMIT but over Daphne's 1 MiB."""
    docs = documents(1000, 1200)
    with override_settings(**SETTINGS):
        layer = get_channel_layer()
        client = await connect(snapshot=True)
        request = await layer.receive("changeflow.sync")
        answer = {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e",
            "seq": 4,
            "changes": None,
            "resync": None,
            "snapshot": {"documents": docs, "truncated": False},
        }
        await layer.send(request["reply_channel"], answer)
        texts = await frames_until_quiet(client)
        await client.disconnect()
    assert all(byte_size(text) <= 1_000_000 for text in texts)
    parts = events(texts)
    assert len(parts) >= 2 and all(p["event"] == "snapshot" for p in parts)
    assert parts[-1]["last"] is True
    assert [d for p in parts for d in p["documents"]] == docs


async def test_a_change_too_large_to_send_is_a_too_large_error_and_delivery_goes_on():
    """Case 10b: the frame of one change exceeds the bound."""
    with override_settings(**SETTINGS, CHANGEFLOW_MAX_SENT_FRAME_BYTES=50_000):
        layer = get_channel_layer()
        client = await connect()
        await layer.group_send("db.t", change(1, {"id": 1}))
        await layer.group_send("db.t", change(2, {"id": 2, "pad": "x" * 60_000}))
        await layer.group_send("db.t", change(3, {"id": 3}))
        texts = await frames_until_quiet(client)
        await client.disconnect()
    assert all(byte_size(text) <= 50_000 for text in texts)
    got = events(texts)
    assert [(e["event"], e.get("seq")) for e in got] == [("change", 1), ("error", 2), ("change", 3)]
    assert got[1]["code"] == "too_large" and got[1]["stream"] == "db.t"
    assert got[1]["epoch"] == "e"


async def test_a_batch_too_large_for_one_frame_comes_in_several_in_order():
    with override_settings(**SETTINGS, CHANGEFLOW_MAX_SENT_FRAME_BYTES=50_000):
        layer = get_channel_layer()
        client = await connect()
        await layer.group_send("db.t", change(1, {"id": 1}))
        batch = [change(seq, {"id": seq, "pad": "y" * 4000}) for seq in range(2, 52)]
        await layer.group_send(
            "db.t", {"type": "changeflow.batch", "database": "db", "table": "t", "changes": batch}
        )
        texts = await frames_until_quiet(client)
        await client.disconnect()
    assert all(byte_size(text) <= 50_000 for text in texts)
    assert len(texts) > 2
    assert [e["seq"] for e in events(texts)] == list(range(1, 52))


async def test_a_change_that_cannot_be_made_into_a_frame_is_a_resync_not_a_skip():
    """Case 5: the subscription's position is past a change before its frame exists;
    when making the frame fails, the client is told, never left with a silent gap."""
    with override_settings(**SETTINGS):
        layer = get_channel_layer()
        client = await connect()
        await layer.group_send("db.t", change(1, {"id": 1}))
        await layer.group_send("db.t", change(2, {"id": 2, "bad": {1, 2}}))  # no JSON for a set
        await layer.group_send("db.t", change(3, {"id": 3}))
        texts = await frames_until_quiet(client)
        await client.disconnect()
    got = [(e["event"], e.get("seq"), e.get("reason")) for e in events(texts)]
    assert got == [("change", 1, None), ("resync", None, "send_failed"), ("change", 3, None)]


class FailingSyncConsumer(ChangeflowConsumer):
    """A consumer with a bug in sending its first sync request (not a channel-layer error)."""

    failures = 1

    async def _send_sync(self, sub: Any, request: Any) -> None:
        if FailingSyncConsumer.failures:
            FailingSyncConsumer.failures -= 1
            raise RuntimeError("a bug while asking for what was missed")
        await super()._send_sync(sub, request)


async def test_a_failure_while_asking_after_a_redis_restart_reaches_the_client_as_resync():
    """After a Redis restart each subscription asks what it missed; when that fails, the
    subscription starts afresh and the client must be told (``resync``), not find its
    subscription restarted in silence."""
    FailingSyncConsumer.failures = 1
    with override_settings(**SETTINGS):
        layer = get_channel_layer()
        client = WebsocketCommunicator(FailingSyncConsumer.as_asgi(), "/ws/changeflow/")
        assert (await client.connect())[0]
        await client.send_json_to({"action": "subscribe", "stream": "db.t"})
        assert (await client.receive_json_from())["event"] == "subscribed"
        await layer.group_send("db.t", change(1, {"id": 1}))
        assert (await client.receive_json_from())["seq"] == 1
        channel = next(iter(layer.groups["db.t"]))
        await layer.send(channel, {"type": "changeflow.layer_recovered"})
        texts = await frames_until_quiet(client)
        await client.disconnect()
    got = [(e["event"], e.get("reason")) for e in events(texts)]
    assert got == [("resync", "send_failed")]


async def test_a_failure_while_asking_what_a_resuming_client_missed_reaches_it_as_resync():
    """A client resuming (``since``) whose sync request fails must be told (``resync``):
    its subscription starts afresh, without the position it resumed from."""
    FailingSyncConsumer.failures = 1
    with override_settings(**SETTINGS):
        client = WebsocketCommunicator(FailingSyncConsumer.as_asgi(), "/ws/changeflow/")
        assert (await client.connect())[0]
        since = {"epoch": "e", "seq": 4}
        await client.send_json_to({"action": "subscribe", "stream": "db.t", "since": since})
        texts = await frames_until_quiet(client)
        await client.disconnect()
    got = [(e["event"], e.get("reason")) for e in events(texts)]
    assert got == [("subscribed", None), ("resync", "send_failed")]
