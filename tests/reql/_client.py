"""One interface over the official driver's sync and asyncio connections.

Every conformance test runs twice, once per loop type, through ``Client``:
``await client.run(query)`` returns plain values (cursors drained to lists),
``await client.feed(query)`` returns a ``Feed`` to read changes from with a
timeout. Sync calls block the test's event loop, which is fine: the ReQL test
server runs on its own thread (or the database is a real, remote one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Awaitable
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.ast import ReQLEncoder
from rethinkdb.errors import ReqlCursorEmpty
from rethinkdb.handshake import HandshakeV1_0
from rethinkdb.net import Cursor

KINDS = ("sync", "asyncio")
FEED_TIMEOUT = 5.0


def driver(kind: str) -> RethinkDB:
    """A private driver instance of the given loop type (never the global ``r``)."""
    instance = RethinkDB()
    if kind == "asyncio":
        instance.set_loop_type("asyncio")
    return instance


class Feed:
    """An open changefeed (or any cursor) read item by item, with timeouts."""

    def __init__(self, kind: str, cursor: Any) -> None:
        self.kind = kind
        self.cursor = cursor

    async def next(self, timeout: float = FEED_TIMEOUT) -> Any:
        """The next item; raises the driver's error, or ReqlTimeoutError/TimeoutError."""
        if self.kind == "sync":
            try:
                return self.cursor.next(wait=timeout)
            except ReqlCursorEmpty:
                # The sync driver's DefaultCursorEmpty is also a StopIteration,
                # which a coroutine may not raise: re-raise the plain driver error.
                raise ReqlCursorEmpty() from None
        return await asyncio.wait_for(self.cursor.next(), timeout)

    async def take(self, count: int, timeout: float = FEED_TIMEOUT) -> list[Any]:
        return [await self.next(timeout) for _ in range(count)]

    async def close(self) -> None:
        """Close the feed (the driver sends STOP)."""
        if self.kind == "sync":
            self.cursor.close()
        else:
            await self.cursor.close()


class Client:
    """A driver connection of either loop type, used the same way from async tests."""

    def __init__(self, kind: str, conn: Any) -> None:
        self.kind = kind
        self.conn = conn
        self.r = driver(kind)

    @classmethod
    async def connect(cls, kind: str, **kwargs: Any) -> Client:
        r = driver(kind)
        conn = r.connect(**kwargs)
        if kind == "asyncio":
            conn = await conn
        return cls(kind, conn)

    async def _await(self, value: Any) -> Any:
        return await value if self.kind == "asyncio" else value

    async def raw(self, query: Any, **optargs: Any) -> Any:
        """What ``query.run`` returns: a value or an undrained cursor."""
        return await self._await(query.run(self.conn, **optargs))

    async def run(self, query: Any, **optargs: Any) -> Any:
        """Run ``query``; a sequence result comes back as a list."""
        result = await self.raw(query, **optargs)
        if isinstance(result, Cursor):
            if self.kind == "sync":
                return list(result)
            return [item async for item in result]
        return result

    async def feed(self, query: Any, **optargs: Any) -> Feed:
        cursor = await self.raw(query, **optargs)
        assert isinstance(cursor, Cursor), cursor
        return Feed(self.kind, cursor)

    async def noreply_wait(self) -> None:
        await self._await(self.conn.noreply_wait())

    async def server(self) -> dict[str, Any]:
        return await self._await(self.conn.server())

    async def close(self) -> None:
        # After a fault test cut the connection, the asyncio driver's close()
        # re-raises the peer's reset from the stream's wait_closed().
        with contextlib.suppress(ConnectionError):
            await self._await(self.conn.close(noreply_wait=False))


class RawConnection:
    """A bare socket that did the real V1_0 handshake, for hand-made frames."""

    def __init__(self, host: str, port: int, user: str = "admin", password: str = "") -> None:
        self.sock = socket.create_connection((host, port), timeout=FEED_TIMEOUT)
        handshake = HandshakeV1_0(
            json.JSONDecoder(), json.JSONEncoder(), host, port, user, password
        )
        response = None
        while True:
            request = handshake.next_message(response)
            if request is None:
                break
            if request != "":
                self.sock.sendall(request)
            response = self._read_until_nul()

    def _read_until_nul(self) -> bytes:
        data = bytearray()
        while True:
            byte = self.sock.recv(1)
            if not byte:
                raise ConnectionError("closed during the handshake")
            if byte == b"\0":
                return bytes(data)
            data += byte

    def send_frame(self, token: int, body: bytes) -> None:
        self.sock.sendall(struct.pack("<QL", token, len(body)) + body)

    def send_query(self, token: int, query: Any) -> None:
        """Send ``query`` (which may hold driver terms) as the driver would encode it."""
        self.send_frame(token, ReQLEncoder().encode(query).encode())

    def _recv_exactly(self, length: int) -> bytes:
        data = bytearray()
        while len(data) < length:
            chunk = self.sock.recv(length - len(data))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            data += chunk
        return bytes(data)

    def read_response(self) -> tuple[int, dict[str, Any]]:
        token, length = struct.unpack("<QL", self._recv_exactly(12))
        return token, json.loads(self._recv_exactly(length))

    def close(self) -> None:
        self.sock.close()


async def error_message(error_type: type[BaseException], awaitable: Awaitable[Any]) -> str:
    """Await ``awaitable``, which must raise ``error_type``; return the server's message.

    (``str()`` of a driver error appends the query; ``.message`` is the server's text.)
    """
    try:
        await awaitable
    except error_type as error:
        return getattr(error, "message", str(error))
    raise AssertionError(f"{error_type.__name__} not raised")
