"""Helpers for end-to-end tests: a browser-protocol websocket client, waits with timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import websockets
from channels_redis.core import RedisChannelLayer


class Acks:
    """Acknowledges what a raw websocket client has read, as every client must
    (docs/protocol.md, "Flow control"): call ``read()`` after each frame received."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.count = 0

    async def read(self) -> None:
        self.count += 1
        with contextlib.suppress(websockets.ConnectionClosed):  # moot once closed
            await self.connection.send(json.dumps({"action": "ack", "frames": self.count}))


class WsClient:
    """A websocket client speaking the browser protocol, with waits that time out.
    It acknowledges each frame it reads (``acks=False``: a client that never does)."""

    def __init__(self, connection: Any, acks: bool = True) -> None:
        self.connection = connection
        self.acks = Acks(connection) if acks else None
        self._next_id = 0
        self._unpacked: list[dict[str, Any]] = []  # the rest of a batch frame

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next frame; a ``batch`` frame is unpacked, as the protocol says."""
        if not self._unpacked:
            frame = json.loads(await asyncio.wait_for(self.connection.recv(), timeout))
            if self.acks is not None:
                await self.acks.read()
            if frame.get("event") != "batch":
                return frame
            self._unpacked = list(frame["events"])
        return self._unpacked.pop(0)

    async def request(self, action: str, stream: str, **fields: Any) -> dict[str, Any]:
        """Send an action with a fresh id; return the answer carrying that id. Frames
        that came before it are left to be read next."""
        self._next_id += 1
        request_id = self._next_id
        await self.send({"action": action, "stream": stream, "id": request_id, **fields})
        passed: list[dict[str, Any]] = []  # frames before the answer (a change may come first)

        def answer(frame: dict[str, Any]) -> bool:
            if frame.get("id") == request_id:
                return True
            passed.append(frame)
            return False

        found = await self.wait_for(answer)
        self._unpacked[:0] = passed  # read next, in their order
        return found

    async def subscribe(self, stream: str) -> None:
        answer = await self.request("subscribe", stream)
        assert answer["event"] == "subscribed", answer

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The first frame matching ``predicate``; others are dropped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("no matching frame")
            frame = await self.recv(remaining)
            if predicate(frame):
                return frame

    async def changes(self, stream: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The next ``count`` change events of ``stream``."""
        found = []
        while len(found) < count:
            found.append(
                await self.wait_for(
                    lambda f: f.get("event") == "change" and f.get("stream") == stream, timeout
                )
            )
        return found


async def receive(layer: RedisChannelLayer, channel: str, timeout: float = 10.0) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), timeout)
