"""Helpers of the identity tests (origins, tokens, fail-closed re-checks)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import websockets

from ..bridge.helpers import WsClient


async def ending(
    client: WsClient, timeout: float = 10.0
) -> tuple[list[dict[str, Any]], int | None]:
    """The frames a connection gets until the server closes it, and the close code.
    ``TimeoutError`` when it is still open after ``timeout`` seconds."""
    frames: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            frames.append(await client.recv(max(0.01, deadline - loop.time())))
    except websockets.ConnectionClosed as closed:
        return frames, closed.rcvd.code if closed.rcvd is not None else None


def error_codes(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["code"] for frame in frames if frame.get("event") == "error"]


async def subscribed(client: WsClient, stream: str) -> None:
    answer = await client.request("subscribe", stream)
    assert answer["event"] == "subscribed", answer


def origin_of(url: str) -> str:
    """The page origin of a ``ws://host:port/...`` URL."""
    return url.replace("ws://", "http://").split("/ws/")[0]


async def open_or_refusal(
    connect: Any, **kwargs: Any
) -> tuple[WsClient | None, tuple[list[dict[str, Any]], int | None] | None]:
    """(a client the server serves, None), or (None, (the frames, the close code)) of a
    connection the server refused. A probe (an unsubscribe from nothing, answered
    ``not_found`` with its id) tells them apart."""
    client = await connect(**kwargs)
    with contextlib.suppress(websockets.ConnectionClosed):  # closed already: read what came
        await client.send({"action": "unsubscribe", "stream": "secdb.probe", "id": "probe"})
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frame = await client.recv(10.0)
            if frame.get("id") == "probe":
                assert frame.get("code") == "not_found", frame
                return client, None
            frames.append(frame)
    except websockets.ConnectionClosed as closed:
        return None, (frames, closed.rcvd.code if closed.rcvd is not None else None)
