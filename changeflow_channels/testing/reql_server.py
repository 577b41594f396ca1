"""The ReQL test server: RethinkDB's wire protocol over TCP, backed by an in-memory engine.

    async with ReqlServer(port=0) as server:
        conn = await r.connect(host=server.host, port=server.port)

    with ReqlServer.in_thread(port=0) as server:      # for sync code
        conn = r.connect(host=server.host, port=server.port)

    python -m changeflow_channels.testing --host 127.0.0.1 --port 28015
    (``python -m changeflow_channels.testing.reql_server`` works too)

For tests only: data lives in memory, there is one user (``admin``) and no
permissions. Fault injection (``drop_connections``, ``restart``, ``delay``)
lets tests exercise what clients do when the database misbehaves; ``freeze``
keeps every connection open but stops answering, like a half-open TCP
connection to a server that hung.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from .reql_connection import ClientConnection
from .reql_engine import Engine
from .reql_protocol import MAX_QUERY_BYTES, Credentials

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ReqlServer:
    """An in-memory RethinkDB speaking the real wire protocol, for tests and demos.

    ``password`` is the ``admin`` user's (empty by default, as on a fresh
    server). ``delay`` (seconds) holds back every response, to simulate a slow
    or far-away server.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, password: str = "") -> None:
        self.host = host
        self.port = port
        self.password = password
        self.users = {"admin": Credentials.from_password(password)}
        self.server_id = str(uuid.uuid4())
        self.server_name = "reql_test_server"
        self.engine = Engine()
        self.delay = 0.0
        self._server: asyncio.Server | None = None
        self._connections: set[ClientConnection] = set()
        self._thawed = asyncio.Event()
        self._thawed.set()

    @property
    def url(self) -> str:
        """``rethinkdb://admin[:password]@host:port``, the form CHANGEFLOW_RETHINKDB takes."""
        auth = "admin" + (f":{self.password}" if self.password else "")
        return f"rethinkdb://{auth}@{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again, on the same port after a restart)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True, limit=MAX_QUERY_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("ReQL test server listening on %s:%d", self.host, self.port)

    async def stop(self, *, keep_data: bool = True) -> None:
        """Stop listening and drop every client, as a server going down would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_connections()
        self.thaw()
        if not keep_data:
            self.engine = Engine()

    async def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        """Go down (clients see their connections cut) and come back on the same port."""
        await self.stop(keep_data=keep_data)
        if down_for:
            await asyncio.sleep(down_for)
        await self.start()

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def freeze(self) -> None:
        """Stop answering (queries and handshakes) but keep every connection open.

        Clients see a half-open connection: their requests are sent and read,
        nothing comes back. Queries still run, so writes made while frozen do
        happen. Responses are held back until ``thaw()``.
        """
        self._thawed.clear()

    def thaw(self) -> None:
        """Answer again, starting with the responses held back since ``freeze()``."""
        self._thawed.set()

    async def wait_thawed(self) -> None:
        """Return at once unless frozen; then wait for ``thaw()``."""
        if not self._thawed.is_set():
            await self._thawed.wait()

    def drop_connections(self) -> int:
        """Cut every client connection; open feeds die with them. Returns how many."""
        connections = list(self._connections)
        for connection in connections:
            connection.abort()
        self._connections.clear()
        return len(connections)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def __aenter__(self) -> ReqlServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as we stopped
            writer.close()
            return
        connection = ClientConnection(self, reader, writer)
        self._connections.add(connection)
        try:
            await connection.serve()
        finally:
            self._connections.discard(connection)

    @classmethod
    @contextlib.contextmanager
    def in_thread(
        cls, host: str = "127.0.0.1", port: int = 0, password: str = ""
    ) -> Iterator[ThreadedReqlServer]:
        """Run a server on its own event loop in a background thread (for sync code)."""
        threaded = ThreadedReqlServer(cls(host, port, password))
        threaded.start()
        try:
            yield threaded
        finally:
            threaded.close()


class ThreadedReqlServer:
    """A ``ReqlServer`` on a loop in a daemon thread, with thread-safe controls."""

    def __init__(self, server: ReqlServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="reql-test-server", daemon=True
        )

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def password(self) -> str:
        return self.server.password

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``fn()`` on the server's loop and wait for its result."""

        async def run() -> T:
            return await fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def start(self) -> None:
        """Listen (again, on the same port after ``stop()``)."""
        if not self._thread.is_alive():
            self._thread.start()
        self.call(self.server.start)

    def stop(self, *, keep_data: bool = True) -> None:
        """Go down (every client is dropped) until ``start()``; the thread stays."""
        if self._thread.is_alive():
            self.call(lambda: self.server.stop(keep_data=keep_data))

    def close(self) -> None:
        """Stop for good, with the thread and its loop."""
        if not self._thread.is_alive():
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        self.call(lambda: self.server.restart(keep_data=keep_data, down_for=down_for))

    def drop_connections(self) -> int:
        async def drop() -> int:
            return self.server.drop_connections()

        return self.call(drop)

    def set_delay(self, seconds: float) -> None:
        """Hold back every response by ``seconds`` (0 to answer at once again)."""

        async def set_it() -> None:
            self.server.delay = seconds

        self.call(set_it)

    def freeze(self) -> None:
        """Keep connections open but stop answering; see ``ReqlServer.freeze``."""

        async def freeze() -> None:
            self.server.freeze()

        self.call(freeze)

    def thaw(self) -> None:
        """Answer again, held-back responses first."""

        async def thaw() -> None:
            self.server.thaw()

        self.call(thaw)


async def _serve_forever(host: str, port: int, password: str) -> None:
    server = ReqlServer(host, port, password)
    await server.start()
    sys.stdout.write(f"ReQL test server listening on {server.url}\n")
    sys.stdout.flush()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop()
    sys.stdout.write("ReQL test server stopped\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m changeflow_channels.testing",
        description="In-memory ReQL test server (RethinkDB wire protocol), for tests only.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=28015)
    parser.add_argument("--password", default="", help="the admin user's password (default: none)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    asyncio.run(_serve_forever(args.host, args.port, args.password))


if __name__ == "__main__":
    main()
