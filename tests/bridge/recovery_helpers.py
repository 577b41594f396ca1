"""Helpers for the fault tests (test_recovery.py).

- ``Stack``: a worker and a Daphne of a test's own (their own channel-layer
  namespace, their own RethinkDB or Redis when the test injects faults there).
- ``SteadyWriter``: pushes documents at a steady pace through the channel layer,
  with ``reply_channel``, and remembers every answer.
- ``ViewClient``: a websocket client speaking the browser protocol that keeps a
  view (documents by primary key) of each stream it subscribes to, as a real
  app would: ``snapshot`` replaces the view, ``change`` frames update it,
  ``resync`` brings a fresh snapshot (``snapshot: true``) or makes it reload the
  table with the driver. It checks the delivery guarantee as it goes (within an
  epoch, ``seq`` grows by exactly one, except across a ``resync`` or a
  ``snapshot``) and reconnects by itself, resuming with ``since``.
- ``Tables``: the driver's view of RethinkDB (create, read a table).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets
from rethinkdb import RethinkDB

from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
)

from ..conftest import save_output
from .helpers import Acks

REPO = Path(__file__).resolve().parents[2]

Docs = dict[Any, dict[str, Any]]


# -- processes -------------------------------------------------------------------------------


class Stack:
    """A worker and a Daphne of a test's own; several workers in a row when restarted."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.env = env
        self.name = name
        self.port = free_port()
        self.workers: list[ManagedProcess] = []
        self.daphne: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/changeflow/"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def worker(self) -> ManagedProcess:
        return self.workers[-1]

    def _spawn_worker(self) -> ManagedProcess:
        worker = start_worker(env=self.env, cwd=str(REPO))
        self.workers.append(worker)
        return worker

    def start(self) -> None:
        """Start worker and Daphne side by side; return once both are ready (blocking)."""
        worker = self._spawn_worker()
        self.daphne = start_daphne("tests.asgi:application", self.port, env=self.env, cwd=str(REPO))
        worker.wait_for(WORKER_READY, timeout=60)
        self.daphne.wait_for(DAPHNE_READY, timeout=60)

    def start_worker(self) -> None:
        """Start another worker and wait until it is ready (blocking)."""
        self._spawn_worker().wait_for(WORKER_READY, timeout=60)

    def kill_worker(self) -> None:
        """SIGKILL the current worker: no shutdown of any kind."""
        self.worker.kill()

    def output(self) -> str:
        parts = [f"--- worker {i} ---\n{w.output}" for i, w in enumerate(self.workers, 1)]
        if self.daphne is not None:
            parts.append(f"--- daphne ---\n{self.daphne.output}")
        return "\n".join(parts)

    def stop(self) -> None:
        for i, worker in enumerate(self.workers, 1):
            worker.stop()
            save_output(f"{self.name}-worker{i}", worker)
        if self.daphne is not None:
            self.daphne.stop()
            save_output(f"{self.name}-daphne", self.daphne)


# -- RethinkDB through the driver --------------------------------------------------------------


class Tables:
    """Reads and creates tables with the official driver (asyncio), retrying while
    RethinkDB is unreachable, as an application would."""

    def __init__(self, connect_kwargs: dict[str, Any]) -> None:
        self.connect_kwargs = connect_kwargs
        self.r = RethinkDB()
        self.r.set_loop_type("asyncio")

    async def _run(self, build: Callable[[RethinkDB], Any], timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            conn = None
            try:
                conn = await asyncio.wait_for(self.r.connect(**self.connect_kwargs), 5)
                result = await asyncio.wait_for(build(self.r).run(conn), 10)
                if hasattr(result, "__aiter__"):
                    result = [item async for item in result]
                return result
            except Exception:
                if loop.time() > deadline:
                    raise
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(noreply_wait=False)
            await asyncio.sleep(0.2)  # RethinkDB is down: try again shortly

    async def create(self, database: str, table: str) -> None:
        await self._run(lambda r: r.db_create(database), 15)
        await self._run(lambda r: r.db(database).table_create(table), 15)
        await self._run(lambda r: r.db(database).table(table).wait(), 15)

    async def read(self, database: str, table: str, timeout: float = 20.0) -> Docs:
        documents = await self._run(lambda r: r.db(database).table(table), timeout)
        return {doc["id"]: doc for doc in documents}


# -- the steady writer ---------------------------------------------------------------------------


@dataclass
class Push:
    n: int
    op: str
    key: str
    sent_at: float
    answer: dict[str, Any] | None = None
    send_error: str | None = None


class SteadyWriter:
    """Pushes one write every ``1/rate`` seconds through the channel layer: mostly
    inserts (``{"id": "d<n>", "w": n}``), every tenth an update (``{"w": n}``) and
    every tenth a delete of a document whose insert was accepted. It never waits
    for an answer before the next push: answers are read as they come.
    ``w`` is the number of the push that wrote a document last."""

    def __init__(
        self,
        layer: Any,
        database: str,
        table: str,
        *,
        rate: float = 40.0,
        channel: str = "changeflow",
        seed: int = 5,
    ) -> None:
        self.layer = layer
        self.database = database
        self.table = table
        self.rate = rate
        self.channel = channel
        self.random = random.Random(seed)
        self.pushes: dict[int, Push] = {}
        self.n = 0
        self.live: list[str] = []  # accepted inserts, not targeted by a delete
        self.delete_targets: set[str] = set()
        self.accepted = 0
        self._stopping = False
        self._arrived = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self.reply = ""

    async def start(self) -> None:
        self.reply = await self.layer.new_channel()
        self._reader = asyncio.ensure_future(self._read_answers())
        self._task = asyncio.ensure_future(self._write())

    def _choose(self, n: int) -> tuple[str, str, Any]:
        if n % 10 == 5 and self.live:
            return "update", self.random.choice(self.live), {"w": n}
        if n % 10 == 9 and len(self.live) > 5:
            key = self.live.pop(self.random.randrange(len(self.live)))
            self.delete_targets.add(key)
            return "delete", key, None
        return "insert", f"d{n}", {"id": f"d{n}", "w": n}

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_at = loop.time()
        while not self._stopping:
            self.n += 1
            n = self.n
            op, key, data = self._choose(n)
            message: dict[str, Any] = {
                "type": "changeflow.push",
                "database": self.database,
                "table": self.table,
                "data": data,
                "op": op,
                "reply_channel": self.reply,
                "id": n,
            }
            if op != "insert":
                message["key"] = key
            push = self.pushes[n] = Push(n, op, key, loop.time())
            try:
                await asyncio.wait_for(self.layer.send(self.channel, message), 5)
            except Exception as error:  # Redis down: the push is not sent; go on
                push.send_error = repr(error)
            next_at += interval
            delay = next_at - loop.time()
            if delay < -1.0:  # fell behind (a stalled send): no burst to catch up
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))  # the writer's pacing

    async def _read_answers(self) -> None:
        delay = 0.05
        while True:
            try:
                answer = await self.layer.receive(self.reply)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarting: read again
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            push = self.pushes.get(answer.get("id"))
            if push is None or push.answer is not None:
                continue
            push.answer = answer
            if answer.get("ok"):
                self.accepted += 1
                if push.op == "insert":
                    self.live.append(push.key)
            async with self._arrived:
                self._arrived.notify_all()

    async def wait_accepted(self, count: int, timeout: float = 20.0) -> None:
        """Until ``count`` pushes in all were accepted (``ok: true``)."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: self.accepted >= count), timeout)

    def _unanswered(self) -> list[Push]:
        return [p for p in self.pushes.values() if p.answer is None and p.send_error is None]

    async def stop(self, drain_timeout: float = 10.0, quiet: float = 2.0) -> None:
        """Stop writing; wait for the answers still due: at most ``drain_timeout``, and
        no longer once none came for ``quiet`` seconds (a push lost with Redis's data
        is never answered)."""
        self._stopping = True
        if self._task is not None:
            await self._task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        async with self._arrived:
            while self._unanswered() and loop.time() < deadline:
                try:
                    timeout = min(quiet, deadline - loop.time())
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except asyncio.TimeoutError:
                    break
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    def stats(self) -> dict[str, int]:
        answered = [p for p in self.pushes.values() if p.answer is not None]
        return {
            "pushes": len(self.pushes),
            "accepted": sum(1 for p in answered if p.answer and p.answer.get("ok")),
            "refused": sum(1 for p in answered if p.answer and not p.answer.get("ok")),
            "unanswered": len(self._unanswered()),
            "send_failed": sum(1 for p in self.pushes.values() if p.send_error),
        }

    def missing_from(self, table: Docs) -> list[str]:
        """Accepted pushes whose effect is not in ``table`` (the goal: none)."""
        problems = []
        for push in self.pushes.values():
            if not (push.answer and push.answer.get("ok")):
                continue
            doc = table.get(push.key)
            if push.op == "delete":
                if doc is not None:
                    problems.append(f"push #{push.n}: delete of {push.key} accepted, still there")
            elif push.key in self.delete_targets:
                continue  # a later delete (answered or not) may have removed it
            elif doc is None:
                problems.append(f"push #{push.n}: {push.op} of {push.key} accepted, not in table")
            elif doc.get("w", -1) < push.n:
                problems.append(f"push #{push.n}: {push.op} of {push.key} accepted, found {doc}")
        return problems


# -- the browser-protocol client with a view ----------------------------------------------------


def doc_key(doc: dict[str, Any]) -> Any:
    return doc["id"]


@dataclass
class Subscription:
    """One stream's view and what its frames looked like."""

    stream: str
    snapshot: bool
    # A filter (docs/protocol.md): its changes skip the seq of those it does not see.
    filter: dict[str, Any] | None = None
    view: Docs = field(default_factory=dict)
    epoch: str | None = None  # the position: last change (or snapshot) applied
    seq: int = 0
    have_position: bool = False  # may resume with since
    expect_any: bool = True  # the next change starts a new base (no continuity check)
    awaiting_snapshot: bool = False
    reload_on_subscribed: bool = False
    changes: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    snapshots: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    resyncs: list[tuple[float, str]] = field(default_factory=list)
    reloads: list[float] = field(default_factory=list)
    subscribed_at: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lost_unannounced: int = 0  # changes skipped without resync (seq gaps, epoch switches)
    changes_before_snapshot: int = 0
    frames: list[dict[str, Any]] = field(default_factory=list)  # the last ones, for diagnosis

    def since(self) -> dict[str, Any] | None:
        if self.have_position and self.epoch is not None:
            return {"epoch": self.epoch, "seq": self.seq}
        return None

    def note(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)
        del self.frames[:-12]

    def on_snapshot(self, frame: dict[str, Any], now: float) -> None:
        self.snapshots.append((now, frame))
        self.view = {doc_key(doc): doc for doc in frame.get("documents") or []}
        if frame.get("truncated"):
            self.violations.append(f"truncated snapshot at seq {frame.get('seq')}")
        self.epoch, self.seq = frame.get("epoch"), frame.get("seq") or 0
        self.have_position = True
        self.expect_any = False
        self.awaiting_snapshot = False

    def on_resync(self, frame: dict[str, Any], now: float) -> bool:
        """Returns True when the view must be reloaded by other means."""
        self.resyncs.append((now, str(frame.get("reason"))))
        self.expect_any = True
        self.have_position = False
        if self.snapshot:
            self.awaiting_snapshot = True
            return False
        return True

    def on_change(self, frame: dict[str, Any], now: float) -> None:
        epoch, seq = frame.get("epoch"), frame.get("seq")
        self.changes.append((now, frame))
        if self.awaiting_snapshot:
            # Harmless for the view (the snapshot replaces it), but not what the
            # guarantee promises; counted, and the continuity check starts at the snapshot.
            self.changes_before_snapshot += 1
        else:
            if not self.expect_any:
                if epoch == self.epoch:
                    if seq <= self.seq if self.filter else seq != self.seq + 1:
                        kind = "repeat" if seq <= self.seq else "gap"
                        self.violations.append(
                            f"{kind}: seq {seq} after {self.seq} in epoch {epoch} without resync"
                        )
                        if seq > self.seq + 1:
                            self.lost_unannounced += seq - self.seq - 1
                elif not (self.epoch is None and seq == 1):
                    self.violations.append(
                        f"epoch switch without resync: {self.epoch}#{self.seq} -> {epoch}#{seq}"
                    )
                    self.lost_unannounced += 1  # at least the changes around the restart
            self.epoch, self.seq = epoch, seq
            self.have_position = True
            self.expect_any = False
        kind = frame.get("type")
        if kind == "remove":
            self.view.pop(doc_key(frame["old_val"]), None)
        elif kind in ("add", "change", "initial"):
            self.view[doc_key(frame["new_val"])] = frame["new_val"]
        else:
            self.violations.append(f"unknown change type {kind!r}")

    def summary(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "snapshot": self.snapshot,
            "changes": len(self.changes),
            "snapshots": [(f["epoch"], f["seq"], len(f["documents"])) for _, f in self.snapshots],
            "resyncs": [reason for _, reason in self.resyncs],
            "reloads": len(self.reloads),
            "violations": self.violations[:10],
            "lost_unannounced": self.lost_unannounced,
            "changes_before_snapshot": self.changes_before_snapshot,
            "position": (self.epoch, self.seq),
            "last_frames": self.frames[-6:],
        }


Reload = Callable[[str], Awaitable[Docs]]


class ViewClient:
    """A websocket client keeping a view per subscribed stream (see the module doc)."""

    def __init__(self, url: str, origin: str, name: str, reload: Reload) -> None:
        self.url = url
        self.origin = origin
        self.name = name
        self.reload = reload
        self.subscriptions: dict[str, Subscription] = {}
        self.errors: list[dict[str, Any]] = []
        self.unexpected_closes: list[float] = []
        self.connection: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._closing = False
        self._updated = asyncio.Condition()

    @property
    def loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    async def connect(self) -> None:
        self._closing = False
        connection = await websockets.connect(
            self.url, open_timeout=10, origin=self.origin, max_size=None
        )
        self.connection = connection
        self._reader = asyncio.ensure_future(self._read(connection))

    async def subscribe(
        self, stream: str, *, snapshot: bool = False, filter: dict[str, Any] | None = None
    ) -> Subscription:
        subscription = self.subscriptions[stream] = Subscription(stream, snapshot, filter)
        await self._subscribe(subscription, resume=False)
        return subscription

    async def _subscribe(self, sub: Subscription, *, resume: bool) -> None:
        self._next_id += 1
        request_id = f"{self.name}-{self._next_id}"
        frame: dict[str, Any] = {"action": "subscribe", "stream": sub.stream, "id": request_id}
        since = sub.since() if resume else None
        if since is not None:
            frame["since"] = since
        if sub.snapshot:
            frame["snapshot"] = True
        if sub.filter is not None:
            frame["filter"] = sub.filter
        # What the frames after "subscribed" must look like:
        if since is not None:
            sub.expect_any = False  # the replay continues from ``since``
        elif sub.snapshot:
            sub.awaiting_snapshot = True
        else:
            sub.expect_any = True
            # Nothing to resume from: a real app reloads what it shows.
            sub.reload_on_subscribed = resume
        future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self.connection.send(json.dumps(frame))
        answer = await asyncio.wait_for(future, 15)
        if answer.get("event") != "subscribed":
            raise AssertionError(f"{self.name}: subscribe {sub.stream} answered {answer}")

    async def _read(self, connection: Any) -> None:
        acks = Acks(connection)  # as every client must (docs/protocol.md, "Flow control")
        try:
            async for raw in connection:
                frame = json.loads(raw)
                events = frame["events"] if frame.get("event") == "batch" else [frame]
                for event in events:
                    await self._handle(event)
                await acks.read()
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
        now = self.loop_time
        kind = frame.get("event")
        sub = self.subscriptions.get(frame.get("stream", ""))
        if sub is not None:
            sub.note(frame)
        request_id = frame.get("id")
        if kind == "error":
            self.errors.append(frame)
        if kind in ("subscribed", "error") and request_id in self._pending:
            future = self._pending.pop(request_id)
            if not future.done():
                future.set_result(frame)
        if sub is None:
            return
        if kind == "subscribed":
            sub.subscribed_at.append(now)
            if sub.reload_on_subscribed:
                sub.reload_on_subscribed = False
                await self._reload(sub)
        elif kind == "snapshot":
            sub.on_snapshot(frame, now)
        elif kind == "change":
            sub.on_change(frame, now)
        elif kind == "resync":
            if sub.on_resync(frame, now):
                await self._reload(sub)

    async def _reload(self, sub: Subscription) -> None:
        """Frames wait meanwhile: changes after the resync are applied on top of the
        reloaded documents, which converges (each change carries the whole document)."""
        sub.view = dict(await self.reload(sub.stream))
        sub.reloads.append(self.loop_time)

    async def _reconnect_loop(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self.resume()
                return
            except Exception:
                failed, self.connection = self.connection, None
                if failed is not None:  # its reader sees it is not current: no respawn
                    with contextlib.suppress(Exception):
                        await failed.close()
            await asyncio.sleep(delay)  # reconnect backoff, as changeflow.js does
            delay = min(delay * 2, 2.0)

    async def resume(self) -> None:
        """Connect again and re-subscribe every stream, with ``since`` where known."""
        await self.connect()
        for sub in self.subscriptions.values():
            await self._subscribe(sub, resume=True)

    async def disconnect(self) -> None:
        """Close the connection on purpose (no automatic reconnect)."""
        self._closing = True
        if self.connection is not None:
            await self.connection.close()
            self.connection = None
        if self._reader is not None:
            await self._reader

    async def close(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        with contextlib.suppress(Exception):
            await self.disconnect()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Until ``predicate()`` holds after some frame; False on timeout."""
        try:
            async with self._updated:
                await asyncio.wait_for(self._updated.wait_for(predicate), timeout)
        except asyncio.TimeoutError:
            return False
        return True


def view_diff(view: Docs, table: Docs) -> dict[str, Any]:
    missing = sorted(set(table) - set(view), key=str)
    extra = sorted(set(view) - set(table), key=str)
    differ = sorted((k for k in set(view) & set(table) if view[k] != table[k]), key=str)
    return {
        "missing": len(missing),
        "extra": len(extra),
        "different": len(differ),
        "examples": {"missing": missing[:5], "extra": extra[:5], "different": differ[:5]},
    }
