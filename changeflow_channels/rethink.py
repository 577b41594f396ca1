"""The worker's access to RethinkDB: a private driver instance on asyncio, connecting
and closing, keepalive, and the one reconnect loop every follower uses (``Follower``).

The user's global ``r`` is never touched: ``set_loop_type`` on it would change
how their own code talks to RethinkDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError, ReqlError

from .rethinkdb_url import RethinkDBAddress

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


def is_connection_error(error: BaseException, conn: Any = None) -> bool:
    """Errors that mean "the connection is gone", not "the query was wrong": the
    driver's own (``ReqlDriverError``, its timeouts included), the socket's, a
    timeout; and any ``ReqlError`` once ``conn`` is closed (a cursor whose
    connection closed raises a plain ``ReqlRuntimeError``)."""
    if isinstance(error, ReqlDriverError | OSError | asyncio.TimeoutError):
        return True
    return conn is not None and isinstance(error, ReqlError) and not conn.is_open()


async def keepalive(r: RethinkDB, conn: Any, label: str) -> None:
    """Ping ``conn`` until it fails to answer, then close it (waking its other users)."""
    while True:
        await asyncio.sleep(PING_EVERY)
        try:
            await asyncio.wait_for(r.expr(1).run(conn), PING_TIMEOUT)
        except (ReqlError, OSError, asyncio.TimeoutError) as error:
            logger.warning("%s: RethinkDB did not answer a ping (%r); reconnecting", label, error)
            close_soon(conn)
            return


async def first_of(*awaitables: Awaitable[Any]) -> tuple[int, Any]:
    """Wait until one of ``awaitables`` is done: its index and its result (the lowest
    index if several are done; its exception is raised).

    Coroutines are run as tasks of their own and cancelled once one is done;
    futures and tasks passed in belong to the caller and are left as they are.
    """
    futures = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    own = [
        future
        for future, awaitable in zip(futures, awaitables, strict=True)
        if future is not awaitable
    ]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in own:
            future.cancel()
    index = next(i for i, future in enumerate(futures) if future.done())
    return index, futures[index].result()


# A follower's wait after a failed session: FIRST_DELAY seconds, doubled each time up to MAX_DELAY.
FIRST_DELAY = 0.1
MAX_DELAY = 5.0

# A follower's session on one connection: True when its work is done (the loop ends),
# False to connect again after the backoff.
Session = Callable[[Any], Awaitable[bool]]


class Follower:
    """The reconnect loop: connect, run a session on the connection, close it quietly,
    back off, again; until a session says it is done or ``stop()`` is called.

    A failed session is logged as ``label``'s: a lost connection as a warning,
    anything else with its traceback. The waits double from ``delay`` up to
    ``max_delay`` (a constant wait when they are equal) and are not reset.
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        label: str,
        *,
        delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.r = r
        self.address = address
        self.label = label
        self.delay = delay
        self.max_delay = max_delay
        self.stopped = asyncio.Event()
        self._conn: Any = None

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def stop(self) -> None:
        """Stop following: closing the connection wakes a query or cursor waiting on it.

        Cancelling the task alone is not enough: on Python 3.11 a cancellation
        can be lost inside ``asyncio.wait_for`` and the follower would go on."""
        self.stopped.set()
        close_soon(self._conn)

    async def follow(self, session: Session, *, retrying: Callable[[], None] | None = None) -> None:
        """Run ``session`` on a new connection each time, until it returns True or
        ``stop()`` is called; ``retrying`` is called before each wait."""
        delay = self.delay
        while not self.stopping:
            if await self.attempt(session, retry_in=delay) or self.stopping:
                return
            if retrying is not None:
                retrying()
            await self.pause(delay)
            delay = min(delay * 2, self.max_delay)

    async def attempt(self, session: Session, *, retry_in: float) -> bool:
        """One connection, one session: what the session returned, True once stopping,
        False if it failed (logged, saying the next try is in ``retry_in`` seconds)."""
        conn = None
        try:
            conn = self._conn = await connect(self.r, self.address)
            if self.stopping:
                return True
            return await session(conn)
        except Exception as error:  # a session's boundary: logged, then the loop goes on
            if self.stopping:
                return True
            if is_connection_error(error, conn):
                logger.warning(
                    "%s: RethinkDB unavailable (%s); retrying in %g s", self.label, error, retry_in
                )
            else:
                logger.exception("%s: failed; retrying in %g s", self.label, retry_in)
            return False
        finally:
            self._conn = None
            await close_quietly(conn)

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if stopped meanwhile."""
        await first_of(asyncio.sleep(seconds), self.stopped.wait())

    async def until(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` unless stopped first: whether it is set."""
        await first_of(event.wait(), self.stopped.wait())
        return event.is_set()

    async def kept_alive(self, conn: Any, work: Awaitable[T]) -> T:
        """``work``, while ``conn`` is pinged (see ``keepalive``)."""
        pinger = asyncio.ensure_future(keepalive(self.r, conn, self.label))
        try:
            return await work
        finally:
            pinger.cancel()
