"""A client too slow to read is disconnected (close code 4009), not buffered forever.

The consumer runs under a stand-in ASGI server whose ``send`` never completes
for frames, as a server with backpressure does when the client reads nothing.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from changeflow_channels.consumers import CLOSE_TOO_SLOW, ChangeflowConsumer

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("limits", "padding"),
    [
        ({"CHANGEFLOW_SEND_QUEUE": 5}, 0),  # by frames waiting
        # by bytes waiting: a batch frame may carry many changes
        ({"CHANGEFLOW_SEND_QUEUE": 1000, "CHANGEFLOW_SEND_QUEUE_BYTES": 5000}, 1000),
    ],
)
async def test_a_client_too_slow_to_read_is_closed_with_4009(limits, padding):
    settings = {
        "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
        **limits,
    }
    with override_settings(**settings):
        incoming: asyncio.Queue = asyncio.Queue()
        sent: list[dict] = []
        closed = asyncio.Event()
        subscribed = asyncio.Event()
        never = asyncio.Event()

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] == "websocket.close":
                closed.set()
            if message["type"] == "websocket.send":
                subscribed.set()
                await never.wait()  # the client reads nothing

        scope = {
            "type": "websocket",
            "path": "/ws/changeflow/",
            "headers": [],
            "query_string": b"",
            "subprotocols": [],
            "user": None,
        }
        app = asyncio.ensure_future(ChangeflowConsumer.as_asgi()(scope, incoming.get, send))
        await incoming.put({"type": "websocket.connect"})
        await incoming.put(
            {
                "type": "websocket.receive",
                "text": json.dumps({"action": "subscribe", "stream": "a.b"}),
            }
        )
        await asyncio.wait_for(subscribed.wait(), 5)
        layer = get_channel_layer()
        for seq in range(1, 30):
            await layer.group_send(
                "a.b",
                {
                    "type": "changeflow.change",
                    "database": "a",
                    "table": "b",
                    "change": {
                        "type": "add",
                        "old_val": None,
                        "new_val": {"id": seq, "pad": "x" * padding},
                    },
                    "epoch": "e",
                    "seq": seq,
                },
            )
            if closed.is_set():
                break
        await asyncio.wait_for(closed.wait(), 5)
        app.cancel()
    [close] = [m for m in sent if m["type"] == "websocket.close"]
    assert close["code"] == CLOSE_TOO_SLOW
    assert len([m for m in sent if m["type"] == "websocket.send"]) == 1  # the rest never left
