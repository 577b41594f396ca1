"""A browser's push is answered with the worker's verdict: its code, not its text, decides."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import ChangeflowConsumer

# The consumer closes stale database connections around each message.
pytestmark = pytest.mark.django_db

SETTINGS = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
}


@pytest.mark.parametrize(
    ("answer", "frame_code"),
    [
        # A text that reads like an outage, with the worker saying it was refused.
        (
            {"error": "RethinkDB unavailable? No: Duplicate primary key", "code": "rejected"},
            "bad_request",
        ),
        ({"error": "push not written", "code": "unavailable"}, "unavailable"),
        ({"error": "data must be an object", "code": "invalid"}, "bad_request"),
    ],
)
async def test_a_refused_push_is_told_by_the_workers_code(answer, frame_code):
    with override_settings(**SETTINGS):
        client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        connected, _ = await client.connect()
        assert connected
        try:
            await client.send_json_to({"action": "push", "stream": "db.t", "data": {}, "id": 7})
            layer = get_channel_layer()
            push = await asyncio.wait_for(layer.receive("changeflow"), 5)
            result = {"type": "changeflow.push.result", "id": push["id"], "ok": False, **answer}
            await layer.send(push["reply_channel"], result)
            frame = await client.receive_json_from(timeout=5)
        finally:
            await client.disconnect()
    assert (frame["event"], frame["code"], frame["id"]) == ("error", frame_code, 7), frame
    assert frame["message"] == answer["error"]


async def test_a_push_frames_idempotency_key_reaches_the_worker():
    with override_settings(**SETTINGS):
        client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        connected, _ = await client.connect()
        assert connected
        try:
            frame = {"action": "push", "stream": "db.t", "data": {}, "id": 1}
            await client.send_json_to({**frame, "idempotency_key": "order-17"})
            layer = get_channel_layer()
            push = await asyncio.wait_for(layer.receive("changeflow"), 5)
            await client.send_json_to({**frame, "id": 2, "idempotency_key": "k" * 129})
            refused = await client.receive_json_from(timeout=5)
        finally:
            await client.disconnect()
    assert push["idempotency_key"] == "order-17"
    assert (refused["event"], refused["code"], refused["id"]) == ("error", "bad_request", 2)
    assert "idempotency_key" in refused["message"]
