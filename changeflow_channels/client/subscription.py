"""One subscription of ``ChangeflowClient``: its events in order and exactly once (positions,
duplicates, snapshot parts), in a bounded queue its reader iterates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import ChangeflowClient

QUEUE_SIZE = 1000  # events of one subscription waiting for its reader


class ChangeflowError(Exception):
    """The server refused something, or gave no answer: ``code`` says what (read the code,
    never the message, which is for people)."""

    def __init__(self, code: str, message: str, frame: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.frame = frame or {}


def position_of(frame: dict[str, Any]) -> dict[str, Any] | None:
    """``{epoch, seq}`` (and ``cursor`` under a row rule) of a change or snapshot frame."""
    epoch, seq = frame.get("epoch"), frame.get("seq")
    if epoch is None or not isinstance(seq, int) or isinstance(seq, bool):
        return None
    position = {"epoch": epoch, "seq": seq}
    if isinstance(frame.get("cursor"), str):
        position["cursor"] = frame["cursor"]
    return position


class Subscription:
    """One server subscription: an async iterator of its events, and an async context
    manager that unsubscribes on exit."""

    def __init__(
        self, client: ChangeflowClient, stream: str, name: str, snapshot: bool, filter: Any
    ) -> None:
        self.client = client
        self.stream = stream
        self.name = name
        self.snapshot = snapshot
        self.filter = filter
        self.position: dict[str, Any] | None = None  # of the last change or snapshot yielded
        self.queue: asyncio.Queue[dict[str, Any] | ChangeflowError] = asyncio.Queue(QUEUE_SIZE)
        # Settled by the first answer: confirmed, or the error that ended the subscription.
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answer.add_done_callback(lambda answer: answer.cancelled() or answer.exception())
        self.parts: list[Any] | None = None  # a snapshot's documents while its parts arrive
        self.refusals = 0  # subscribes refused as unavailable or rate_limited in a row

    def frame(self, request_id: int) -> dict[str, Any]:
        """The subscribe frame: with ``since`` when there is a position to resume from."""
        frame: dict[str, Any] = {
            "action": "subscribe",
            "stream": self.stream,
            "sub": self.name,
            "id": request_id,
        }
        if self.snapshot:
            frame["snapshot"] = True
        if self.filter is not None:
            frame["filter"] = self.filter
        if self.position is not None:
            frame["since"] = dict(self.position)
        return frame

    async def subscribed(self) -> None:
        """Wait until the server confirmed the subscription (``ChangeflowError`` if refused)."""
        await asyncio.shield(self.answer)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._events()

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, ChangeflowError):
                raise item
            yield item

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.unsubscribe(self)

    # -- frames of this subscription, from the client's reader -----------------------------

    async def receive(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        if event == "change":
            position = position_of(frame)
            last = self.position
            if position and last and last["epoch"] == position["epoch"]:
                if position["seq"] <= last["seq"]:
                    return  # never repeated by the server; should it happen, yielded once
            self.position = position or self.position
        elif event == "snapshot":
            if frame.get("last") is False:
                self.parts = (self.parts or []) + list(frame.get("documents") or [])
                return
            if self.parts is not None:
                frame = {**frame, "documents": self.parts + list(frame.get("documents") or [])}
                self.parts = None
            frame = {key: value for key, value in frame.items() if key not in ("part", "last")}
            self.position = position_of(frame)
        elif event == "error" and frame.get("seq") is not None:
            self.position = position_of(frame) or self.position  # too_large: moves past it
        await self.queue.put(frame)

    def confirm(self) -> None:
        self.refusals = 0
        if not self.answer.done():
            self.answer.set_result(None)

    def end(self, error: ChangeflowError) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(error)
