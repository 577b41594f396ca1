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
from typing import Any, Protocol, TypeVar

from rethinkdb import RethinkDB
from rethinkdb.errors import (
    ReqlAuthError,
    ReqlDriverError,
    ReqlError,
    ReqlInternalError,
    ReqlOpIndeterminateError,
)

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


# The server of each address (several servers: ``rethinkdb_url.py``) that answered last.
_answered: dict[RethinkDBAddress, int] = {}


async def connect(r: RethinkDB, address: RethinkDBAddress) -> Any:
    """Open one connection; raises ``ReqlDriverError`` when no server is reachable.

    Of several servers, the one that answered last is tried first, then the others
    in the order given: a server lost sends the next connection to another one.
    Refused credentials are not tried elsewhere (the cluster shares its users)."""
    servers = address.servers
    first = _answered.get(address, 0)
    error: ReqlDriverError | None = None
    for step in range(len(servers)):
        index = (first + step) % len(servers)
        try:
            conn = await r.connect(
                timeout=CONNECT_TIMEOUT, **address.connect_kwargs(servers[index])
            )
        except ReqlAuthError:
            raise
        except ReqlDriverError as unreachable:
            error = unreachable
            continue
        if index != first:
            logger.info("RethinkDB: connected to %s:%d", *servers[index])
        _answered[address] = index
        return conn
    assert error is not None  # there is always a server
    raise error


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


# A table lost its primary replica during a write (a cluster): the write may have
# landed. Indeterminate is the plain case; RethinkDB 2.4 says "internal error" while it
# elects a new primary (the table's configuration cannot be read). Both are tried again
# as writes that may have landed, once the table takes writes again.
LOST_PRIMARY = (ReqlOpIndeterminateError, ReqlInternalError)


def is_connection_error(error: BaseException, conn: Any = None) -> bool:
    """Errors that mean "the connection is gone", not "the query was wrong": the
    driver's own (``ReqlDriverError``, its timeouts included), the socket's, a
    timeout; and any ``ReqlError`` once ``conn`` is closed (a cursor whose
    connection closed raises a plain ``ReqlRuntimeError``)."""
    if isinstance(error, ReqlDriverError | OSError | asyncio.TimeoutError):
        return True
    return conn is not None and isinstance(error, ReqlError) and not conn.is_open()


def auth_failed(address: RethinkDBAddress) -> str:
    """What to tell people when RethinkDB refused the credentials of ``address``."""
    return (
        f"RethinkDB at {address.where} refused user {address.user!r}: "
        "authentication failed (check the user and password in CHANGEFLOW_RETHINKDB)"
    )


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


class Connections(Protocol):
    """Where a follower's sessions get their connection: one of their own
    (``OwnConnections``) or one shared with other followers (``feed_pool.py``)."""

    # Shared: stop() must not close it (it closes a follower's cursor instead),
    # and its keepalive is the pool's, not the follower's.
    shared: bool

    async def acquire(self) -> Any: ...

    async def release(self, conn: Any) -> None: ...


class OwnConnections:
    """A new connection for each session, closed after it."""

    shared = False

    def __init__(self, r: RethinkDB, address: RethinkDBAddress) -> None:
        self.r = r
        self.address = address

    async def acquire(self) -> Any:
        return await connect(self.r, self.address)

    async def release(self, conn: Any) -> None:
        await close_quietly(conn)


class Stopped(Exception):
    """A follower was stopped while a query of its session was running."""


async def close_cursor(cursor: Any) -> None:
    """Close a cursor (a changefeed: the server stops it), without raising: a
    shared connection stays open for the other cursors on it."""
    with contextlib.suppress(ReqlError, OSError, asyncio.TimeoutError):
        await asyncio.wait_for(cursor.close(), 2)


def close_cursor_soon(cursor: Any) -> None:
    """``close_cursor`` in the background (from sync code)."""
    task = asyncio.ensure_future(close_cursor(cursor))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _close_late_result(query: asyncio.Future[Any]) -> None:
    """A done-callback for a query its follower stopped waiting for: a cursor it
    opened is closed (nobody reads it), its error retrieved."""
    if query.cancelled() or query.exception() is not None:
        return
    result = query.result()
    if hasattr(result, "close") and asyncio.iscoroutinefunction(result.close):
        close_cursor_soon(result)


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
    ``max_delay`` (a constant wait when they are equal); they start again from
    ``delay`` once a session calls ``progressed()`` (it got going: its failure is
    a new outage, not the same one going on).
    """

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        label: str,
        *,
        delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
        connections: Connections | None = None,
    ) -> None:
        self.r = r
        self.address = address
        self.label = label
        self.delay = delay
        self.max_delay = max_delay
        self.connections = connections or OwnConnections(r, address)
        self.stopped = asyncio.Event()
        self._delay = delay  # the wait after the next failed session
        self._conn: Any = None

    @property
    def stopping(self) -> bool:
        return self.stopped.is_set()

    def stop(self) -> None:
        """Stop following: closing the connection wakes a query or cursor waiting on it
        (a shared connection stays open: ``query`` returns at once and ``wake``
        closes what the session reads).

        Cancelling the task alone is not enough: on Python 3.11 a cancellation
        can be lost inside ``asyncio.wait_for`` and the follower would go on."""
        self.stopped.set()
        if not self.connections.shared:
            close_soon(self._conn)
        self.wake()

    def wake(self) -> None:
        """Called by ``stop()``: a session reading a cursor on a shared connection
        closes it here."""

    async def query(self, running: Awaitable[T]) -> T:
        """The result of ``running`` (a query run), unless stopped first: ``Stopped``.

        The query is never cancelled: the driver closes a connection that answers
        a query cancelled meanwhile; a cursor it opens later is closed."""
        task = asyncio.ensure_future(running)
        try:
            await first_of(task, self.stopped.wait())
        finally:
            if not task.done():
                task.add_done_callback(_close_late_result)
        if not task.done():
            raise Stopped(self.label)
        return task.result()

    async def follow(self, session: Session, *, retrying: Callable[[], None] | None = None) -> None:
        """Run ``session`` on a new connection each time, until it returns True or
        ``stop()`` is called; ``retrying`` is called before each wait."""
        self._delay = self.delay
        while not self.stopping:
            if await self.attempt(session) or self.stopping:
                return
            if retrying is not None:
                retrying()
            await self.pause(self._delay)
            self._delay = min(self._delay * 2, self.max_delay)

    def progressed(self) -> None:
        """A session got going: the wait after its failure is the first one again."""
        self._delay = self.delay

    async def attempt(self, session: Session, *, retry_in: float | None = None) -> bool:
        """One connection, one session: what the session returned, True once stopping,
        False if it failed (logged, saying the next try is in ``retry_in`` seconds;
        by default ``follow``'s next wait)."""
        conn = None
        try:
            conn = self._conn = await self.connections.acquire()
            if self.stopping:
                return True
            return await session(conn)
        except Exception as error:  # a session's boundary: logged, then the loop goes on
            if self.stopping:
                return True
            if retry_in is None:
                retry_in = self._delay
            if isinstance(error, ReqlAuthError):
                # Not a passing outage: only a changed user or password ends it.
                logger.error(
                    "%s: %s; retrying in %g s", self.label, auth_failed(self.address), retry_in
                )
            elif is_connection_error(error, conn):
                logger.warning(
                    "%s: RethinkDB unavailable (%s); retrying in %g s", self.label, error, retry_in
                )
            else:
                logger.exception("%s: failed; retrying in %g s", self.label, retry_in)
            return False
        finally:
            self._conn = None
            if conn is not None:
                await self.connections.release(conn)

    async def pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if stopped meanwhile."""
        await first_of(asyncio.sleep(seconds), self.stopped.wait())

    async def until(self, event: asyncio.Event) -> bool:
        """Wait for ``event`` unless stopped first: whether it is set."""
        await first_of(event.wait(), self.stopped.wait())
        return event.is_set()

    async def kept_alive(self, conn: Any, work: Awaitable[T]) -> T:
        """``work``, while ``conn`` is pinged (see ``keepalive``; a shared connection
        is pinged by its pool)."""
        if self.connections.shared:
            return await work
        pinger = asyncio.ensure_future(keepalive(self.r, conn, self.label))
        try:
            return await work
        finally:
            pinger.cancel()
