"""The connections the table feeds share: at most CHANGEFLOW_FEED_CONNECTIONS of
them, whatever the number of tables.

The driver multiplexes queries and cursors on one connection (each has its
token), so a thousand changefeeds can share one. Each connection is pinged by
one keepalive task, not one per table. A connection lost (or not answering a
ping, then closed) ends the cursor of every feed on it: each feed's reconnect
loop (``rethink.Follower``) asks the pool again and starts a new epoch; the
first to ask opens the connection again, the others wait for that attempt and
share its outcome (a server that is down costs one failed connect per
connection, not one per table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlDriverError, ReqlError

from ..rethink import PING_EVERY, PING_TIMEOUT, close_quietly, close_soon, connect
from ..rethinkdb_url import RethinkDBAddress

logger = logging.getLogger(__name__)


class Slot:
    """One connection of the pool (opened again once lost) and how many use it."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.conn: Any = None
        self.users = 0
        self.opening: asyncio.Future[Any] | None = None
        self.pinger: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        return self.conn is not None and self.conn.is_open()


def least_used(slots: list[Slot]) -> Slot:
    """The slot a new user goes to: the one with fewest users (the first of those)."""
    return min(slots, key=lambda slot: slot.users)


class SharedConnections:
    """At most ``size`` connections, shared by the followers that ``acquire`` them
    (``rethink.Connections``): each goes to the connection with fewest users."""

    shared = True

    def __init__(
        self,
        r: RethinkDB,
        address: RethinkDBAddress,
        size: int,
        *,
        ping_every: float = PING_EVERY,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.r = r
        self.address = address
        self.slots = [Slot(number) for number in range(max(size, 1))]
        self.ping_every = ping_every
        self.ping_timeout = ping_timeout
        # id of a connection handed out -> its slot and how many hold it now
        self._held: dict[int, list[Any]] = {}
        self._closed = False

    @property
    def open_connections(self) -> int:
        return sum(slot.is_open for slot in self.slots)

    async def acquire(self) -> Any:
        """A connection of the least used slot, opened if it is not open (one
        attempt at a time per slot: those who come meanwhile share its outcome)."""
        if self._closed:
            raise ReqlDriverError("the feed connections are closed")
        slot = least_used(self.slots)
        slot.users += 1
        try:
            conn = slot.conn if slot.is_open else await self._open(slot)
        except BaseException:
            slot.users -= 1
            raise
        held = self._held.setdefault(id(conn), [slot, 0])
        held[1] += 1
        return conn

    async def release(self, conn: Any) -> None:
        """A follower's session on ``conn`` is over; the connection stays open for
        the others (a lost one is opened again by the next ``acquire``)."""
        held = self._held.get(id(conn))
        if held is None:
            return
        slot, count = held
        slot.users -= 1
        if count <= 1:
            del self._held[id(conn)]
        else:
            held[1] = count - 1

    async def _open(self, slot: Slot) -> Any:
        if slot.opening is None:
            slot.opening = asyncio.ensure_future(self._connect(slot))
            slot.opening.add_done_callback(lambda done: _opened(slot, done))
        return await asyncio.shield(slot.opening)

    async def _connect(self, slot: Slot) -> Any:
        old, slot.conn = slot.conn, None
        if slot.pinger is not None:
            slot.pinger.cancel()
        close_soon(old)
        conn = await connect(self.r, self.address)
        if self._closed:
            await close_quietly(conn)
            raise ReqlDriverError("the feed connections are closed")
        slot.conn = conn
        slot.pinger = asyncio.ensure_future(self._keepalive(slot, conn))
        logger.debug("feed connection %d open", slot.number)
        return conn

    async def _keepalive(self, slot: Slot, conn: Any) -> None:
        """Ping ``conn`` until it is closed or fails to answer (then close it: every
        cursor on it ends, and its feeds start again)."""
        while conn.is_open():
            await asyncio.sleep(self.ping_every)
            if not conn.is_open():
                return
            try:
                await asyncio.wait_for(self.r.expr(1).run(conn), self.ping_timeout)
            except (ReqlError, OSError, asyncio.TimeoutError) as error:
                if conn.is_open():
                    logger.warning(
                        "feed connection %d: RethinkDB did not answer a ping (%r); "
                        "its feeds start again",
                        slot.number,
                        error,
                    )
                    close_soon(conn)
                return

    async def close(self) -> None:
        """Close every connection (the feeds are stopped first)."""
        self._closed = True
        for slot in self.slots:
            if slot.pinger is not None:
                slot.pinger.cancel()
            conn, slot.conn = slot.conn, None
            await close_quietly(conn)


def _opened(slot: Slot, opening: asyncio.Future[Any]) -> None:
    """The attempt is over: the next ``acquire`` of a lost connection tries again
    (its error, if any, went to those who waited for it)."""
    slot.opening = None
    if not opening.cancelled():
        with contextlib.suppress(BaseException):
            opening.exception()
