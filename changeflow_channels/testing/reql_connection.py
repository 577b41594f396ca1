"""One driver connection to the ReQL test server: the V1_0 handshake, then queries by token.

Queries run on the server's engine; long sequences go out in batches (CONTINUE),
changefeeds stay open until STOP. Query answers are held back by the server's
``delay``, and every answer (handshake included) by its ``freeze()`` (see
:class:`~.reql_server.ReqlServer`, which owns the listening socket and the faults).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from rethinkdb.ql2_pb2 import Query, Response

from .reql_errors import ReqlClientError, ReqlInternalError, ReqlServerError
from .reql_protocol import (
    HANDSHAKE_ERROR_PROTOCOL,
    HEADER,
    MAX_QUERY_BYTES,
    V1_0_MAGIC,
    HandshakeError,
    ScramExchange,
    encode_response,
    handshake_failure,
    version_reply,
)
from .reql_results import Atom, Feed, Sequence

if TYPE_CHECKING:
    from .reql_server import ReqlServer

logger = logging.getLogger(__name__)

QueryType = Query.QueryType
ResponseType = Response.ResponseType

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


class ClientConnection:
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
            batch = result.first_batch()
            if result.done:  # a `.limit(n)` feed already complete
                result.close()
                await self._send(token, {"t": ResponseType.SUCCESS_SEQUENCE, "r": batch})
                return
            self.cursors[token] = result
            self.feed_notes[token] = list(result.notes)
            await self._send(
                token, {"t": ResponseType.SUCCESS_PARTIAL, "r": batch, "n": result.notes}
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
        if cursor.done:  # the feed's `.limit(n)` is reached: it ends as a sequence
            self.cursors.pop(token, None)
            self.feed_notes.pop(token, None)
            cursor.close()
            await self._send(token, {"t": ResponseType.SUCCESS_SEQUENCE, "r": batch})
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
