"""The matrix's writer and clients, built on tests/bridge/recovery_helpers.py.

- ``FaultWriter``: the ``SteadyWriter`` at about 200 pushes a second (``busy``) or in
  small bursts whose answers it waits for (``quiet``). Every document carries ``g``
  (0, 1 or 2: the filtered clients keep ``g`` in [0, 1]); updates change ``g``, so
  documents enter and leave the filtered view. When the product knows
  ``idempotency_key`` (issue 14, item 3), every push carries one, and ``retry_unanswered``
  sends a push whose answer never came again with the same key.
- ``MatrixViewClient``: a ``ViewClient`` that acknowledges what it reads (flow
  control) and takes snapshots in parts; ``FilteredViewClient`` also subscribes with
  a ``filter`` (its ``seq`` has holes: the changes it does not see).
- ``frame_duplicates``: change frames delivered twice (same epoch and seq).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
from typing import Any

import websockets

from changeflow_channels.pushes import build_push

from ..bridge.recovery_helpers import Docs, Push, SteadyWriter, Subscription, ViewClient

# CHANGEFLOW_FAULTS_ACKS=0: no ``ack`` frames (to run the matrix against a server from
# before flow control, which refuses them and closes a client that keeps sending them).
ACKS = os.environ.get("CHANGEFLOW_FAULTS_ACKS", "1") != "0"
GROUPS_SHOWN = [0, 1]  # the filtered clients' ``g`` values
FILTER = {"g": {"in": GROUPS_SHOWN}}


def idempotency_supported() -> bool:
    """Whether the product takes ``idempotency_key`` on pushes (issue 14, item 3)."""
    return "idempotency_key" in inspect.signature(build_push).parameters


def filtered(table: Docs) -> Docs:
    return {key: doc for key, doc in table.items() if doc.get("g") in GROUPS_SHOWN}


class FaultWriter(SteadyWriter):
    """See the module doc. ``keys`` names this writer's idempotency keys."""

    def __init__(self, layer: Any, database: str, table: str, *, keys: str, rate: float = 200.0):
        super().__init__(layer, database, table, rate=rate)
        self.keys = keys if idempotency_supported() else None
        self.messages: dict[int, dict[str, Any]] = {}
        self.retried: set[int] = set()
        self.lost_reply: str | None = None  # while set, answers go there (lost)

    def _choose(self, n: int) -> tuple[str, str, Any]:
        op, key, data = super()._choose(n)
        if data is not None:
            data["g"] = n % 3
        return op, key, data

    async def start_answers(self) -> None:
        """Read answers, write nothing yet (quiet: bursts only)."""
        self.reply = await self.layer.new_channel()
        self._reader = asyncio.ensure_future(self._read_answers())

    async def start_steady(self) -> None:
        self._task = asyncio.ensure_future(self._write())

    async def _send(self, message: dict[str, Any]) -> str | None:
        try:
            await asyncio.wait_for(self.layer.send(self.channel, message), 5)
        except Exception as error:  # Redis down: the push is not sent; go on
            return repr(error)
        return None

    async def push_next(self) -> Push:
        self.n += 1
        n = self.n
        op, key, data = self._choose(n)
        message: dict[str, Any] = {
            "type": "changeflow.push",
            "database": self.database,
            "table": self.table,
            "data": data,
            "op": op,
            "reply_channel": self.lost_reply or self.reply,
            "id": n,
        }
        if op != "insert":
            message["key"] = key
        if self.keys is not None:
            message["idempotency_key"] = f"{self.keys}-{n}"
        self.messages[n] = message
        push = self.pushes[n] = Push(n, op, key, asyncio.get_running_loop().time())
        push.send_error = await self._send(message)
        return push

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_at = loop.time()
        while not self._stopping:
            await self.push_next()
            next_at += interval
            delay = next_at - loop.time()
            if delay < -1.0:  # fell behind (a stalled send): no burst to catch up
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))  # the writer's pacing

    def accepted_after(self, n: int) -> int:
        """How many pushes sent after push ``n`` were accepted."""
        return sum(1 for p in self.pushes.values() if p.n > n and (p.answer or {}).get("ok"))

    async def wait_accepted_after(self, n: int, count: int, timeout: float) -> None:
        """Until ``count`` pushes sent after push ``n`` were accepted (raises on timeout)."""
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: self.accepted_after(n) >= count), timeout
            )

    async def burst(self, count: int, timeout: float = 20.0) -> int:
        """Push until ``count`` more were accepted (a refused or unsent one is replaced),
        ``count`` at a time; returns how many were accepted within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self.accepted + count
        while self.accepted < target and loop.time() < deadline:
            sent = [await self.push_next() for _ in range(target - self.accepted)]
            async with self._arrived:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._arrived.wait_for(
                            lambda sent=sent: all(p.answer or p.send_error for p in sent)
                        ),
                        max(0.1, deadline - loop.time()),
                    )
            if any(p.send_error for p in sent):
                await asyncio.sleep(0.2)  # the channel layer is down: try again shortly
        return count - max(0, target - self.accepted)

    async def retry_unanswered(self, timeout: float = 15.0) -> int:
        """Send each push whose answer never came again (same message, same key, if
        keys are supported); returns how many were retried."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.ensure_future(self._read_answers())
        pending = [p for p in self.pushes.values() if p.answer is None]
        for push in pending:
            self.retried.add(push.n)
            message = {**self.messages[push.n], "reply_channel": self.reply}
            push.send_error = await self._send(message)
        async with self._arrived:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: all(p.answer for p in pending)), timeout
                )
        return len(pending)

    def retried_not_once(self, table: Docs) -> list[str]:
        """Retried inserts (own keys) that are not in the table exactly once."""
        problems = []
        for n in sorted(self.retried):
            push = self.pushes[n]
            if push.op == "insert" and push.key not in self.delete_targets:
                if push.key not in table:
                    problems.append(f"retried push #{n} ({push.key}) not in the table")
        return problems


class MatrixSubscription(Subscription):
    """A snapshot may come in parts (``part`` 0, 1, ... and ``last``): the view is
    replaced once the last part is in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts: list[dict[str, Any]] = []
        self.too_large: list[tuple[Any, Any]] = []  # (epoch, seq) of changes not sent
        self.reload_after_snapshot = False

    def on_too_large(self, frame: dict[str, Any]) -> bool:
        """A change (or snapshot document) too large to send: the position moves past
        it, and the view must be reloaded (now: True; after the snapshot: False)."""
        epoch, seq = frame.get("epoch"), frame.get("seq")
        self.too_large.append((epoch, seq))
        if self.awaiting_snapshot:
            self.reload_after_snapshot = True
            return False
        if epoch == self.epoch and isinstance(seq, int) and seq > self.seq:
            self.seq = seq
        return True

    def on_snapshot(self, frame: dict[str, Any], now: float) -> None:
        if "part" not in frame:
            super().on_snapshot(frame, now)
            return
        if frame["part"] == 0:
            self.parts = []
        self.parts.append(frame)
        if frame.get("last"):
            documents = [doc for part in self.parts for doc in part.get("documents") or []]
            super().on_snapshot({**frame, "documents": documents}, now)
            self.parts = []


class FilteredSubscription(MatrixSubscription):
    """A filtered subscription's changes keep the table's ``seq``: the changes it does
    not see leave holes, so within an epoch ``seq`` only has to grow (no repeat)."""

    def on_change(self, frame: dict[str, Any], now: float) -> None:
        seq = frame.get("seq")
        continuing = not self.awaiting_snapshot and not self.expect_any
        if continuing and frame.get("epoch") == self.epoch and isinstance(seq, int):
            if seq > self.seq + 1:
                self.seq = seq - 1  # a hole of the filter, not a gap
        super().on_change(frame, now)


class MatrixViewClient(ViewClient):
    """A ``ViewClient`` that acknowledges every frame it reads (docs/protocol.md: flow
    control; a server without ``ack`` answers it with an error frame, harmlessly),
    takes snapshots in parts, reloads the table on a ``too_large`` error for a change
    (docs/protocol.md: "reload it by other means"), and adds ``extra`` to every
    subscribe frame it sends."""

    subscription_class: type[Subscription] = MatrixSubscription

    def __init__(self, *args: Any, extra: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extra = extra or {}
        self.read_frames = 0

    async def connect(self) -> None:
        self.read_frames = 0
        await super().connect()
        send = self.connection.send

        async def send_with_extra(raw: str) -> None:
            frame = json.loads(raw)
            if frame.get("action") == "subscribe":
                frame.update(self.extra)
            await send(json.dumps(frame))

        self.connection.send = send_with_extra

    async def _read(self, connection: Any) -> None:
        try:
            async for raw in connection:
                frame = json.loads(raw)
                events = frame["events"] if frame.get("event") == "batch" else [frame]
                for event in events:
                    await self._handle(event)
                if connection is self.connection and ACKS:
                    self.read_frames += 1
                    with contextlib.suppress(websockets.ConnectionClosed):
                        await connection.send(
                            json.dumps({"action": "ack", "frames": self.read_frames})
                        )
                async with self._updated:
                    self._updated.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            # Only the current connection's end calls for a reconnect.
            if not self._closing and connection is self.connection:
                self.connection = None
                self.unexpected_closes.append(self.loop_time)
                self._reconnecting = asyncio.ensure_future(self._reconnect_loop())

    async def _handle(self, frame: dict[str, Any]) -> None:
        await super()._handle(frame)
        sub = self.subscriptions.get(frame.get("stream", ""))
        if not isinstance(sub, MatrixSubscription):
            return
        if frame.get("event") == "error" and frame.get("code") == "too_large":
            if sub.on_too_large(frame):
                await self._reload(sub)
        elif frame.get("event") == "snapshot" and sub.reload_after_snapshot:
            if not sub.awaiting_snapshot:
                sub.reload_after_snapshot = False
                await self._reload(sub)

    async def subscribe(self, stream: str, *, snapshot: bool = False) -> Subscription:
        subscription = self.subscriptions[stream] = self.subscription_class(stream, snapshot)
        await self._subscribe(subscription, resume=False)
        return subscription


class FilteredViewClient(MatrixViewClient):
    subscription_class = FilteredSubscription


def frame_duplicates(sub: Subscription) -> int:
    """Change frames that came twice (the same epoch and seq)."""
    positions = [(frame.get("epoch"), frame.get("seq")) for _, frame in sub.changes]
    return len(positions) - len(set(positions))
