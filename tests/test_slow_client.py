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

from changeflow_channels.consumers import CLOSE_SEND_FAILED, CLOSE_TOO_SLOW, ChangeflowConsumer

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


# -- behind a server that takes every frame at once (Daphne) ------------------------------


class InstantServer:
    """A stand-in ASGI server that takes every frame at once, as Daphne does (it
    buffers what the client does not read). ``fail_on``: the frame number whose
    send raises, as Daphne's does for a frame over its size limit."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.incoming: asyncio.Queue = asyncio.Queue()
        self.frames: list[str] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.fail_on = fail_on
        self.sent = asyncio.Condition()

    async def send(self, message: dict) -> None:
        if message["type"] == "websocket.close":
            self.close_code = message.get("code")
            self.closed.set()
        if message["type"] == "websocket.send":
            if len(self.frames) + 1 == self.fail_on:
                raise ValueError("frame exceeds the maximum message size")
            self.frames.append(message["text"])
            async with self.sent:
                self.sent.notify_all()

    async def client_sends(self, frame: dict) -> None:
        await self.incoming.put({"type": "websocket.receive", "text": json.dumps(frame)})

    async def wait_frames(self, count: int) -> None:
        async with self.sent:
            await asyncio.wait_for(self.sent.wait_for(lambda: len(self.frames) >= count), 5)

    def start(self) -> asyncio.Future:
        scope = {
            "type": "websocket",
            "path": "/ws/changeflow/",
            "headers": [],
            "query_string": b"",
            "subprotocols": [],
            "user": None,
        }
        return asyncio.ensure_future(
            ChangeflowConsumer.as_asgi()(scope, self.incoming.get, self.send)
        )


def change(seq: int, padding: int = 0) -> dict:
    return {
        "type": "changeflow.change",
        "database": "a",
        "table": "b",
        "change": {"type": "add", "old_val": None, "new_val": {"id": seq, "pad": "x" * padding}},
        "epoch": "e",
        "seq": seq,
    }


WINDOW = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
    "CHANGEFLOW_SEND_WINDOW": 10,
    "CHANGEFLOW_SEND_QUEUE": 20,
}


async def subscribed(server: InstantServer) -> asyncio.Future:
    app = server.start()
    await server.incoming.put({"type": "websocket.connect"})
    await server.client_sends({"action": "subscribe", "stream": "a.b"})
    await server.wait_frames(1)
    return app


async def test_behind_daphne_a_client_that_never_acknowledges_gets_the_window_then_4009():
    """Case 4: Daphne never blocks a send, so only the client's acks can bound what
    it holds for a client that does not read."""
    with override_settings(**WINDOW):
        server = InstantServer()
        app = await subscribed(server)
        layer = get_channel_layer()
        for seq in range(1, 100):
            await layer.group_send("a.b", change(seq))
            if server.closed.is_set():
                break
        await asyncio.wait_for(server.closed.wait(), 5)
        app.cancel()
    assert server.close_code == CLOSE_TOO_SLOW
    assert len(server.frames) == 10  # the window: "subscribed" and 9 changes


async def test_the_byte_window_holds_back_large_frames_too():
    with override_settings(**WINDOW, CHANGEFLOW_SEND_WINDOW_BYTES=20_000):
        server = InstantServer()
        app = await subscribed(server)
        layer = get_channel_layer()
        for seq in range(1, 100):
            await layer.group_send("a.b", change(seq, padding=5000))
            if server.closed.is_set():
                break
        await asyncio.wait_for(server.closed.wait(), 5)
        app.cancel()
    assert server.close_code == CLOSE_TOO_SLOW
    assert sum(len(text) for text in server.frames) <= 20_000 + 5200  # about the byte window


async def test_a_client_that_acknowledges_gets_everything_and_stays():
    with override_settings(**WINDOW):
        server = InstantServer()
        app = await subscribed(server)
        await server.client_sends({"action": "ack", "frames": 1})
        layer = get_channel_layer()
        for seq in range(1, 101):
            await layer.group_send("a.b", change(seq))
            await server.wait_frames(seq + 1)
            await server.client_sends({"action": "ack", "frames": len(server.frames)})
        assert not server.closed.is_set()
        app.cancel()
    seqs = [json.loads(text)["seq"] for text in server.frames[1:]]
    assert seqs == list(range(1, 101))


async def test_an_ack_beyond_what_was_sent_is_refused_and_changes_nothing():
    with override_settings(**WINDOW):
        server = InstantServer()
        app = await subscribed(server)
        await server.client_sends({"action": "ack", "frames": 5})
        await server.wait_frames(2)
        error = json.loads(server.frames[1])
        assert (error["event"], error["code"]) == ("error", "bad_request")
        await server.client_sends({"action": "ack"})
        await server.wait_frames(3)
        assert json.loads(server.frames[2])["code"] == "bad_request"
        app.cancel()


async def test_a_frame_the_server_fails_to_send_closes_the_connection_with_4011(caplog):
    """Case 10: the writer used to die silently, leaving the socket open and the
    client frozen; the client must be told (a close code) and resume (``since``)."""
    with override_settings(**{**WINDOW, "CHANGEFLOW_SEND_WINDOW": 1000}):
        server = InstantServer(fail_on=3)
        app = await subscribed(server)
        layer = get_channel_layer()
        for seq in range(1, 5):
            await layer.group_send("a.b", change(seq))
        await asyncio.wait_for(server.closed.wait(), 5)
        app.cancel()
    assert server.close_code == CLOSE_SEND_FAILED
    assert [json.loads(text).get("seq") for text in server.frames] == [None, 1]
    assert "sending a frame failed" in caplog.text
