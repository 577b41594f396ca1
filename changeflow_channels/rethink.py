"""The worker's access to RethinkDB: a private driver instance on asyncio.

The user's global ``r`` is never touched: ``set_loop_type`` on it would change
how their own code talks to RethinkDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError, ReqlError

from .rethinkdb_url import RethinkDBAddress

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
# Pseudo-types arrive untouched; jsonsafe.json_safe turns them into strings.
RAW_FORMATS = {"time_format": "raw", "binary_format": "raw"}


def new_driver() -> RethinkDB:
    """A driver instance of our own, with the asyncio loop type."""
    r = RethinkDB()
    r.set_loop_type("asyncio")
    return r


async def connect(r: RethinkDB, address: RethinkDBAddress) -> Any:
    """Open one connection; raises ``ReqlDriverError`` when the server is unreachable."""
    return await r.connect(timeout=CONNECT_TIMEOUT, **address.connect_kwargs())


async def close_quietly(conn: Any) -> None:
    """Close without waiting for noreply queries: ``close()`` with the default
    ``noreply_wait=True`` hangs forever on a dead connection."""
    if conn is None:
        return
    with contextlib.suppress(ReqlError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(conn.close(noreply_wait=False), 2)


# A connection that stops answering (half-open: the server or the network gone
# without a word) is found by a cheap query every PING_EVERY seconds.
PING_EVERY = 5.0
PING_TIMEOUT = 5.0

_closing: set[asyncio.Task[None]] = set()


def close_soon(conn: Any) -> None:
    """Close ``conn`` in the background: from sync code, to wake whoever waits on it."""
    if conn is not None:
        task = asyncio.ensure_future(close_quietly(conn))
        _closing.add(task)  # keep a reference until it is done
        task.add_done_callback(_closing.discard)


class Reconnecting:
    """One lazily (re)opened connection, shared by the tasks of one component."""

    def __init__(self, r: RethinkDB, address: RethinkDBAddress) -> None:
        self.r = r
        self.address = address
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if self._conn is None or not self._conn.is_open():
                await close_quietly(self._conn)
                self._conn = await connect(self.r, self.address)
            return self._conn

    async def discard(self) -> None:
        """Forget a connection that failed; the next ``get`` opens a new one."""
        conn, self._conn = self._conn, None
        await close_quietly(conn)

    async def close(self) -> None:
        await self.discard()


def is_connection_error(error: BaseException) -> bool:
    """Errors that mean "the connection is gone", not "the query was wrong"."""
    if isinstance(error, ReqlDriverError | ConnectionError | OSError | asyncio.TimeoutError):
        return True
    return isinstance(error, ReqlError) and "Connection is closed" in str(error)


async def keepalive(r: RethinkDB, conn: Any, label: str) -> None:
    """Ping ``conn`` until it fails to answer, then close it (waking its other users)."""
    while True:
        await asyncio.sleep(PING_EVERY)
        try:
            await asyncio.wait_for(r.expr(1).run(conn), PING_TIMEOUT)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning("%s: RethinkDB did not answer a ping (%r); reconnecting", label, error)
            close_soon(conn)
            return
