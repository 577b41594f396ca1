"""The websocket consumer outlives what goes wrong while it delivers changes.

The consumer runs in-process on the in-memory channel layer; the test sends the
worker's messages itself, so every frame the client must get is known exactly.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels import metrics
from changeflow_channels.consumers import ChangeflowConsumer

LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
STATE = {"allowed": True}


class RaisingRowRule:
    """A row rule with a bug: it raises on documents without an owner."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return True

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False

    async def filter_change(self, user: Any, stream: str, change: dict) -> dict:
        _ = change["new_val"]["owner"]  # a KeyError without an owner
        return change


class SlowRevocableRule:
    """A sync row rule (a thread hop per call) and a permission the test revokes."""

    async def can_subscribe(self, user: Any, stream: str) -> bool:
        return STATE["allowed"]

    async def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False

    def filter_change(self, user: Any, stream: str, change: dict) -> dict:
        time.sleep(0.1)
        return change


def change(stream: str, seq: int, doc: dict) -> dict:
    database, table = stream.split(".")
    return {
        "type": "changeflow.change",
        "database": database,
        "table": table,
        "change": {"type": "add", "old_val": None, "new_val": doc},
        "epoch": "e",
        "seq": seq,
    }


def flat(frames: list[dict]) -> list[dict]:
    """Frames as the protocol reads them: a batch's events one by one."""
    return [event for frame in frames for event in frame.get("events", [frame])]


async def connect(*streams: str) -> WebsocketCommunicator:
    client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
    connected, _ = await client.connect()
    assert connected
    for n, stream in enumerate(streams):
        await client.send_json_to({"action": "subscribe", "stream": stream, "id": n})
        assert (await client.receive_json_from())["event"] == "subscribed"
    return client


def gauges() -> tuple[float, float]:
    return metrics.WEBSOCKET_CLIENTS._value.get(), metrics.SUBSCRIPTIONS._value.get()


@pytest.mark.django_db
async def test_a_raising_row_rule_ends_its_subscription_with_an_error_not_the_connection():
    before = gauges()
    settings = {"CHANNEL_LAYERS": LAYER, "CHANGEFLOW_PERMISSIONS": f"{__name__}.RaisingRowRule"}
    with override_settings(**settings):
        client = await connect("db.t", "db.u")
        layer = get_channel_layer()
        await layer.group_send("db.t", change("db.t", 1, {"id": 1, "owner": "ann"}))
        assert (await client.receive_json_from())["new_val"]["id"] == 1
        await layer.group_send("db.t", change("db.t", 2, {"id": 2}))  # the rule raises
        error = await client.receive_json_from()
        assert error["event"] == "error" and error["code"] == "unavailable", error
        assert "db.t has ended" in error["message"]
        # The connection and the other subscription go on.
        await layer.group_send("db.u", change("db.u", 1, {"id": 9, "owner": "bob"}))
        after = await client.receive_json_from()
        assert after["stream"] == "db.u" and after["new_val"]["id"] == 9
        await layer.group_send("db.t", change("db.t", 3, {"id": 3, "owner": "ann"}))
        assert await client.receive_nothing(0.2)  # ended: nothing more of db.t
        await client.disconnect()
    assert gauges() == before


@pytest.mark.django_db(transaction=True)
async def test_the_end_of_a_revoked_subscription_comes_after_its_last_change():
    """A re-check that ends a subscription while a batch is being handled: its
    error frame keeps its place behind the changes already let through."""
    STATE["allowed"] = True
    settings = {
        "CHANNEL_LAYERS": LAYER,
        "CHANGEFLOW_PERMISSIONS": f"{__name__}.SlowRevocableRule",
        "CHANGEFLOW_RECHECK_EVERY": 0.15,
    }
    with override_settings(**settings):
        client = await connect("db.t")
        STATE["allowed"] = False  # the next re-check ends the subscription
        batch = [change("db.t", seq, {"id": seq}) for seq in range(1, 6)]
        await get_channel_layer().group_send(
            "db.t", {"type": "changeflow.batch", "database": "db", "table": "t", "changes": batch}
        )
        frames = []
        while not await client.receive_nothing(0.8):
            frames.append(await client.receive_json_from())
        await client.disconnect()
    events = flat(frames)
    kinds = [event["event"] for event in events]
    assert kinds.count("error") == 1, events
    assert "change" not in kinds[kinds.index("error") :], events


@pytest.mark.django_db
async def test_a_consumer_ended_without_a_disconnect_leaves_its_gauges_as_they_were():
    before = gauges()
    with override_settings(
        CHANNEL_LAYERS=LAYER,
        CHANGEFLOW_PERMISSIONS="changeflow_channels.permissions.AllowAllPolicy",
    ):
        client = await connect("db.t", "db.u")
        assert gauges() == (before[0] + 1, before[1] + 2)
        client.future.cancel()  # the server gives up on the application
        await client.wait(timeout=2)
    assert gauges() == before
