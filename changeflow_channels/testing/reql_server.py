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
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from rethinkdb.ql2_pb2 import Query, Response

from .reql_engine import Engine
from .reql_errors import ReqlClientError, ReqlInternalError, ReqlServerError
from .reql_protocol import (
    HANDSHAKE_ERROR_PROTOCOL,
    HEADER,
    MAX_QUERY_BYTES,
    V1_0_MAGIC,
    Credentials,
    HandshakeError,
    ScramExchange,
    encode_response,
    handshake_failure,
    version_reply,
)
from .reql_results import Atom, Feed, Sequence

logger = logging.getLogger(__name__)

QueryType = Query.QueryType
ResponseType = Response.ResponseType
T = TypeVar("T")

# The real server cuts long sequences into batches; clients then send CONTINUE.
DEFAULT_BATCH_ROWS = 1000


def _unexpected(exc: BaseException) -> ReqlServerError:
    """The error the real server sends for an unexpected exception."""
    return ReqlInternalError(f"Unexpected exception: {exc}")


def _as_server_error(exc: BaseException) -> ReqlServerError:
    return exc if isinstance(exc, ReqlServerError) else _unexpected(exc)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("query task failed in the server", exc_info=task.exception())


class _SequenceCursor:
    """The rest of a long sequence, handed out batch by batch on CONTINUE."""

    def __init__(self, items: list[Any], batch_rows: int) -> None:
        self._items = items
        self._batch_rows = batch_rows
        self._offset = 0

    def next_batch(self) -> tuple[list[Any], bool]:
        """The next batch, and whether it is the last one."""
        batch = self._items[self._offset : self._offset + self._batch_rows]
        self._offset += len(batch)
        return batch, self._offset >= len(self._items)


class _ClientConnection:
    """One driver connection: the handshake, then queries by token."""

    def __init__(
        self,
        server: ReqlServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.cursors: dict[int, _SequenceCursor | Feed] = {}
        self.feed_notes: dict[int, list[int]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.noreply_tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def serve(self) -> None:
        peer = self.writer.get_extra_info("peername")
        try:
            if await self._handshake():
                logger.debug("client %s authenticated", peer)
                await self._read_queries()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # The client went away; nothing to answer.
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        # noreply queries were received: let them finish, as the real server does.
        for task in self.tasks.values():
            task.cancel()
        for cursor in self.cursors.values():
            if not isinstance(cursor, _SequenceCursor):
                cursor.close()
        self.cursors.clear()
        self.writer.close()

    def abort(self) -> None:
        """Drop the TCP connection at once, as a crashed server or a cut cable would."""
        transport = self.writer.transport
        if transport is not None:
            transport.abort()
        self.close()

    # -- handshake -------------------------------------------------------------

    async def _handshake(self) -> bool:
        magic = await self.reader.readexactly(4)
        try:
            if magic != V1_0_MAGIC:
                raise HandshakeError(
                    b"ERROR: Received an unsupported protocol version. This port is for "
                    b"RethinkDB queries. Does your client driver version not match the "
                    b"server?\n\0"
                )
            client_first = await self._read_handshake_message()
            if client_first.get("protocol_version") != 0:
                raise handshake_failure(
                    "Unsupported protocol version "
                    f"{client_first.get('protocol_version')}, expected between 0 and 0.",
                    HANDSHAKE_ERROR_PROTOCOL,
                )
            exchange = ScramExchange(self.server.users)
            first_reply = version_reply() + exchange.first(client_first)
            await self.server.wait_thawed()
            self.writer.write(first_reply)
            client_final = await self._read_handshake_message()
            final_reply = exchange.final(client_final)
            await self.server.wait_thawed()
            self.writer.write(final_reply)
            await self.writer.drain()
            return True
        except HandshakeError as error:
            logger.info("handshake refused: %s", error)
            await self.server.wait_thawed()
            self.writer.write(error.reply)
            await self.writer.drain()
            return False

    async def _read_handshake_message(self) -> dict[str, Any]:
        raw = await self.reader.readuntil(b"\0")
        try:
            message = json.loads(raw[:-1])
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise handshake_failure(
                "Expected a JSON object in the handshake.", HANDSHAKE_ERROR_PROTOCOL
            )
        return message

    # -- queries ---------------------------------------------------------------

    async def _read_queries(self) -> None:
        while True:
            token, length = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            if length >= MAX_QUERY_BYTES:
                # The frame boundary can no longer be trusted: answer and hang up.
                await self._send_error(
                    token,
                    ReqlClientError(
                        f"Query size ({length}) greater than maximum ({MAX_QUERY_BYTES - 1})."
                    ),
                )
                return
            body = await self.reader.readexactly(length)
            try:
                query = json.loads(body)
                if not isinstance(query, list) or not query or not isinstance(query[0], int):
                    raise ValueError("not a query array")
            except ValueError:
                await self._send_error(
                    token, ReqlClientError("Client is buggy (failed to deserialize query).")
                )
                continue
            self._dispatch(token, query)

    def _dispatch(self, token: int, query: list[Any]) -> None:
        query_type = query[0]
        if query_type == QueryType.START:
            term = query[1] if len(query) > 1 else None
            optargs = query[2] if len(query) > 2 and isinstance(query[2], dict) else {}
            if optargs.get("noreply"):
                task = asyncio.ensure_future(self._start(token, term, optargs, reply=False))
                self.noreply_tasks.add(task)
                task.add_done_callback(self.noreply_tasks.discard)
                task.add_done_callback(_log_failure)
            else:
                self._spawn(token, self._start(token, term, optargs, reply=True))
        elif query_type == QueryType.CONTINUE:
            self._spawn(token, self._continue(token))
        elif query_type == QueryType.STOP:
            self._stop(token)
        elif query_type == QueryType.NOREPLY_WAIT:
            self._spawn(token, self._noreply_wait(token))
        elif query_type == QueryType.SERVER_INFO:
            self._spawn(token, self._server_info(token))
        else:
            self._spawn(
                token,
                self._send_error(token, ReqlClientError(f"Unrecognized QueryType: {query_type}.")),
            )

    def _spawn(self, token: int, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks[token] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self.tasks.get(token) is done:
                del self.tasks[token]

        task.add_done_callback(forget)
        task.add_done_callback(_log_failure)

    async def _start(self, token: int, term: Any, optargs: dict[str, Any], reply: bool) -> None:
        try:
            result = await self.server.engine.run(term, optargs)
        except ReqlServerError as error:
            if reply:
                await self._send_error(token, error)
            return
        except Exception as exc:
            # An engine bug: answer as the real server does for unexpected
            # exceptions, rather than leaving the client waiting forever.
            logger.exception("query %d failed in the engine", token)
            if reply:
                await self._send_error(token, _unexpected(exc))
            return
        if not reply:
            if not isinstance(result, Atom | Sequence):
                result.close()
            return
        if isinstance(result, Atom):
            await self._send(token, {"t": ResponseType.SUCCESS_ATOM, "r": [result.value]})
        elif isinstance(result, Sequence):
            batch_rows = optargs.get("max_batch_rows")
            if not isinstance(batch_rows, int) or batch_rows < 1:
                batch_rows = DEFAULT_BATCH_ROWS
            cursor = _SequenceCursor(result.items, batch_rows)
            await self._send_sequence_batch(token, cursor)
        else:
            self.cursors[token] = result
            self.feed_notes[token] = list(result.notes)
            await self._send(
                token,
                {"t": ResponseType.SUCCESS_PARTIAL, "r": result.first_batch(), "n": result.notes},
            )

    async def _send_sequence_batch(self, token: int, cursor: _SequenceCursor) -> None:
        batch, last = cursor.next_batch()
        if last:
            self.cursors.pop(token, None)
            await self._send(token, {"t": ResponseType.SUCCESS_SEQUENCE, "r": batch})
        else:
            self.cursors[token] = cursor
            await self._send(token, {"t": ResponseType.SUCCESS_PARTIAL, "r": batch})

    async def _continue(self, token: int) -> None:
        cursor = self.cursors.get(token)
        if cursor is None:
            await self._send_error(token, ReqlClientError(f"Token {token} not in stream cache."))
            return
        if isinstance(cursor, _SequenceCursor):
            await self._send_sequence_batch(token, cursor)
            return
        try:
            batch = await cursor.next_batch()
        except asyncio.CancelledError:
            if not self.closed and self.cursors.get(token) is not cursor:
                # STOP interrupted this CONTINUE: like the real server, answer
                # it with an empty SUCCESS_SEQUENCE (the STOP gets its own).
                await self._send(token, {"t": ResponseType.SUCCESS_SEQUENCE, "r": []})
            raise
        except Exception as exc:
            self.cursors.pop(token, None)
            cursor.close()
            if not isinstance(exc, ReqlServerError):
                logger.exception("feed %d failed in the engine", token)
            await self._send_error(token, _as_server_error(exc))
            return
        await self._send(
            token, {"t": ResponseType.SUCCESS_PARTIAL, "r": batch, "n": self.feed_notes[token]}
        )

    def _stop(self, token: int) -> None:
        # As the real server does: a CONTINUE still waiting for changes is cut
        # short and answered with an empty SUCCESS_SEQUENCE, and the STOP gets
        # a SUCCESS_SEQUENCE of its own (the driver counts one answer per query).
        cursor = self.cursors.pop(token, None)
        self.feed_notes.pop(token, None)
        pending = self.tasks.pop(token, None)
        if pending is not None:
            pending.cancel()
        if cursor is not None and not isinstance(cursor, _SequenceCursor):
            cursor.close()
        self._spawn(token, self._send(token, {"t": ResponseType.SUCCESS_SEQUENCE, "r": []}))

    async def _noreply_wait(self, token: int) -> None:
        if self.noreply_tasks:
            await asyncio.wait(set(self.noreply_tasks))
        await self._send(token, {"t": ResponseType.WAIT_COMPLETE, "r": []})

    async def _server_info(self, token: int) -> None:
        info = {"id": self.server.server_id, "name": self.server.server_name, "proxy": False}
        await self._send(token, {"t": ResponseType.SERVER_INFO, "r": [info]})

    async def _send_error(self, token: int, error: ReqlServerError) -> None:
        response: dict[str, Any] = {
            "t": error.response_type,
            "r": [error.message],
            "b": error.backtrace,
        }
        if error.error_type is not None:
            response["e"] = error.error_type
        await self._send(token, response)

    async def _send(self, token: int, response: dict[str, Any]) -> None:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        await self.server.wait_thawed()
        try:
            frame = encode_response(token, response)
        except (TypeError, ValueError) as exc:
            frame = encode_response(
                token,
                {
                    "t": ResponseType.RUNTIME_ERROR,
                    "r": [f"Cannot encode the result as JSON: {exc}"],
                    "b": [],
                    "e": Response.ErrorType.INTERNAL,
                },
            )
        if self.writer.is_closing():
            return
        self.writer.write(frame)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()


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
        self._connections: set[_ClientConnection] = set()
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
        connection = _ClientConnection(self, reader, writer)
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
