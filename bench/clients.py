"""Websocket clients in a process of their own: ``python -m bench.clients``.

Driven by JSON lines on stdin, answering with one JSON line each on stdout:

- ``{"cmd": "connect", "url", "n", "stream"}``: open ``n`` clients, subscribe each to
  ``stream``; answers when every one is subscribed.
- ``{"cmd": "collect", "timeout", "expected"}``: answers ``{"armed": true}`` at once, then,
  when every client has seen a change whose document holds ``"end": true`` and, with
  ``expected``, that many changes (RethinkDB orders a table's changes per document only:
  the end marker may overtake earlier documents), or at the timeout, what they received
  (see ``Recorder.summary``).
- ``{"cmd": "bare", "url", "n", "count"}``: ``n`` clients each ask the bare consumer
  for ``count`` frames; answers frames per second over all of them.
- ``{"cmd": "push", "url", "n", "stream", "count", "window"}``: ``n`` new connections
  each push ``count`` documents ``{"n", "t"}`` into ``stream``, ``window`` unanswered at
  most; answers pushes per second (first sent to last answered) and the errors by code.
- ``{"cmd": "close"}``: closes the clients.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

import websockets

CONNECT_AT_ONCE = 25  # handshakes in flight (Daphne's listen backlog is small)
MAX_LATENCIES = 200_000
HANDSHAKE_ATTEMPTS = 5
ACK_EVERY = 32  # frames, and seconds after the last frame: changeflow.js's acknowledgements
ACK_AFTER = 0.05


class Recorder:
    """What every client received during one ``collect``."""

    def __init__(self, clients: int, expected: int | None = None) -> None:
        self.clients = clients
        self.expected = None if expected is None else expected * clients
        self.changes = 0  # change events, batches unpacked
        self.messages = 0  # websocket messages
        self.first: float | None = None
        self.last = 0.0
        self.latencies: list[float] = []  # ms, from the document's "t" to receipt
        self.by_n: dict[int, list[float]] = {}  # n -> [t, first receipt, last receipt, clients]
        self.gaps = 0
        self.resyncs = 0
        self.reasons: list[str] = []
        self.ended = 0
        self.done = asyncio.Event()

    def message(self, received: float, text: str | bytes, position: dict[str, Any]) -> None:
        frame = json.loads(text)
        self.messages += 1
        if self.first is None:
            self.first = received
        self.last = received
        events = frame["events"] if frame.get("event") == "batch" else [frame]
        for event in events:
            kind = event.get("event")
            if kind == "resync":
                self.resyncs += 1
                self.reasons.append(str(event.get("reason")))
            if kind != "change":
                continue
            self.changes += 1
            epoch, seq = event["epoch"], event["seq"]
            if position.get("epoch") == epoch and seq != position["seq"] + 1:
                self.gaps += 1
            position["epoch"], position["seq"] = epoch, seq
            document = event.get("new_val") or {}
            sent = document.get("t")
            if sent is not None:
                latency = (received - sent) * 1000
                if len(self.latencies) < MAX_LATENCIES:
                    self.latencies.append(latency)
                entry = self.by_n.get(document.get("n", -1))
                if entry is None:
                    self.by_n[document.get("n", -1)] = [sent, received, received, 1]
                else:
                    entry[1] = min(entry[1], received)
                    entry[2] = max(entry[2], received)
                    entry[3] += 1
            if document.get("end"):
                self.ended += 1
        if self.ended >= self.clients and (self.expected is None or self.changes >= self.expected):
            self.done.set()

    def summary(self) -> dict[str, Any]:
        """Counts, first/last receipt times, latencies, and per document ``n``:
        ``[write time, first receipt, last receipt, clients]``."""
        return {
            "changes": self.changes,
            "messages": self.messages,
            "first": self.first,
            "last": self.last,
            "gaps": self.gaps,
            "resyncs": self.resyncs,
            "reasons": self.reasons,
            "ended": self.ended,
            "latencies": self.latencies,
            "by_n": {str(n): entry for n, entry in self.by_n.items()},
        }


class Clients:
    def __init__(self) -> None:
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.recorder: Recorder | None = None

    async def connect(
        self, url: str, n: int, stream: str, at_once: int = CONNECT_AT_ONCE
    ) -> dict[str, Any]:
        origin = url.replace("ws://", "http://").split("/ws/")[0]
        gate = asyncio.Semaphore(at_once)
        started = time.monotonic()
        retries = 0
        errors: dict[str, int] = {}

        async def one() -> Any:
            nonlocal retries
            async with gate:
                for attempt in range(HANDSHAKE_ATTEMPTS):
                    if attempt:
                        retries += 1
                        await asyncio.sleep(0.5)
                    try:
                        return await subscribed()
                    except (websockets.WebSocketException, OSError, asyncio.TimeoutError) as error:
                        # Daphne answers 403 to a handshake its application did not
                        # accept within 5 s (a loaded machine): a browser tries again.
                        kind = type(error).__name__
                        errors[kind] = errors.get(kind, 0) + 1
                return None  # not opened: counted in "failed"

        async def subscribed() -> Any:
            ws = await websockets.connect(url, origin=origin, open_timeout=60, max_queue=None)
            try:
                await ws.send(json.dumps({"action": "subscribe", "stream": stream, "id": 1}))
                read = 0
                async for frame in ws:  # until the subscription is confirmed
                    read += 1
                    if json.loads(frame).get("event") == "subscribed":
                        return ws, read
                raise websockets.ConnectionClosed(None, None)
            except BaseException:
                await ws.close()
                raise

        results = await asyncio.gather(*(one() for _ in range(n)))
        opened = [result for result in results if result is not None]
        self.sockets.extend(ws for ws, _ in opened)
        self.readers.extend(asyncio.ensure_future(self._read(ws, read)) for ws, read in opened)
        return {
            "clients": len(self.sockets),
            "connect_s": time.monotonic() - started,
            "retries": retries,
            "failed": n - len(opened),
            "errors": errors,
        }

    async def _read(self, ws: Any, read: int) -> None:
        """Frames received, acknowledged as ``changeflow.js`` does (docs/protocol.md,
        "Flow control"): at least every ``ACK_EVERY`` frames, and ``ACK_AFTER``
        seconds after the last one."""
        position: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        acked = read
        timer: asyncio.TimerHandle | None = None
        sends: set[asyncio.Future[None]] = set()

        def ack() -> None:
            nonlocal acked, timer
            timer = None
            if read > acked:
                acked = read
                sending = asyncio.ensure_future(
                    ws.send(json.dumps({"action": "ack", "frames": read}))
                )
                sends.add(sending)
                sending.add_done_callback(sends.discard)

        await ws.send(json.dumps({"action": "ack", "frames": read}))
        async for text in ws:
            received = time.time()
            read += 1
            if read - acked >= ACK_EVERY:
                if timer is not None:
                    timer.cancel()
                ack()
            elif timer is None:
                timer = loop.call_later(ACK_AFTER, ack)
            if self.recorder is not None:
                self.recorder.message(received, text, position)

    async def collect(
        self, timeout: float, expected: int | None = None, quiet: float = 2.0
    ) -> dict[str, Any]:
        """Until every client saw the end marker (and ``expected`` changes), or nothing
        came for ``quiet`` seconds after something did (lost: see ``resyncs``)."""
        self.recorder = recorder = Recorder(len(self.sockets), expected)
        reply({"armed": True})
        deadline = time.time() + timeout
        while not recorder.done.is_set() and time.time() < deadline:
            try:
                await asyncio.wait_for(recorder.done.wait(), 0.25)
            except asyncio.TimeoutError:
                if recorder.first is not None and time.time() - recorder.last > quiet:
                    break
        self.recorder = None
        return {**recorder.summary(), "timed_out": not recorder.done.is_set()}

    async def close(self) -> dict[str, Any]:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        self.sockets.clear()
        self.readers.clear()
        return {"closed": True}


async def bare(url: str, n: int, count: int) -> dict[str, Any]:
    """Frames per second from the bare consumer to ``n`` clients, ``count`` each."""
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    sockets = [
        await websockets.connect(url, origin=origin, open_timeout=60, max_queue=None)
        for _ in range(n)
    ]
    frames = 0
    last = 0.0

    async def drain(ws: Any) -> None:
        nonlocal frames, last
        async for text in ws:
            if text == '{"event":"done"}':
                return
            frames += 1
            last = time.time()

    started = time.time()
    await asyncio.gather(*(ws.send(json.dumps({"count": count})) for ws in sockets))
    await asyncio.gather(*(drain(ws) for ws in sockets))
    await asyncio.gather(*(ws.close() for ws in sockets))
    return {"frames": frames, "seconds": last - started, "frames_per_s": frames / (last - started)}


async def push(url: str, n: int, stream: str, count: int, window: int) -> dict[str, Any]:
    """Pushes per second from ``n`` browser connections, ``count`` each, at most
    ``window`` of each unanswered (every push answered: ``pushed`` or ``error``)."""
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def open_one() -> Any:
        async with gate:
            return await websockets.connect(url, origin=origin, open_timeout=60, max_queue=None)

    sockets = await asyncio.gather(*(open_one() for _ in range(n)))
    errors: dict[str, int] = {}
    pushed = 0
    last = 0.0

    async def one(ws: Any) -> None:
        nonlocal pushed, last
        free = asyncio.Semaphore(window)
        answered = 0
        read = 0

        async def answers() -> None:
            nonlocal pushed, last, answered, read
            async for text in ws:
                read += 1
                if read % 64 == 0:  # within the send window (docs/protocol.md, "Flow control")
                    await ws.send(json.dumps({"action": "ack", "frames": read}))
                frame = json.loads(text)
                if frame.get("id") is None:
                    continue
                if frame.get("event") == "pushed":
                    pushed += 1
                else:
                    code = str(frame.get("code"))
                    errors[code] = errors.get(code, 0) + 1
                answered += 1
                last = time.time()
                free.release()
                if answered == count:
                    return

        reader = asyncio.ensure_future(answers())
        for k in range(count):
            await free.acquire()
            if reader.done():
                break
            data = {"n": k, "t": time.time()}
            await ws.send(json.dumps({"action": "push", "stream": stream, "data": data, "id": k}))
        await reader
        await ws.send(json.dumps({"action": "ack", "frames": read}))

    started = time.time()
    await asyncio.gather(*(one(ws) for ws in sockets))
    await asyncio.gather(*(ws.close() for ws in sockets))
    seconds = max(last - started, 1e-9)
    return {"pushed": pushed, "errors": errors, "seconds": seconds, "per_s": pushed / seconds}


def reply(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients = Clients()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        cmd = command.pop("cmd")
        try:
            if cmd == "connect":
                reply(await clients.connect(**command))
            elif cmd == "collect":
                reply(await clients.collect(**command))
            elif cmd == "push":
                reply(await push(**command))
            elif cmd == "bare":
                reply(await bare(**command))
            elif cmd == "close":
                reply(await clients.close())
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as error:  # answered, so the driver never hangs
            reply({"error": repr(error)})


if __name__ == "__main__":
    asyncio.run(serve())
