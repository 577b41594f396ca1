"""An application writing to RethinkDB itself (the driver, not pushes), at a steady pace.

Documents ``{"id": "x<n>", "x": n}``, inserted one by one on one connection. A write
that fails (the primary replica lost: ``ReqlOpFailedError``, an indeterminate outcome,
a lost connection) is tried again until it is acknowledged, as an application would;
``conflict="replace"`` makes a write that landed before its error harmless. The
writer keeps the pace: the writes held up by a failover go out after it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlError

RETRY_PAUSE = 0.05


class DirectWriter:
    def __init__(self, connect_kwargs: dict[str, Any], database: str, table: str, rate: float):
        self.connect_kwargs = connect_kwargs
        self.database = database
        self.table = table
        self.rate = rate
        self.r = RethinkDB()
        self.r.set_loop_type("asyncio")
        self.acknowledged: set[str] = set()
        self.retried = 0
        self.n = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _write(self, conn: Any, doc: dict[str, Any]) -> Any:
        """Until written; returns the connection to go on with."""
        while True:
            try:
                if conn is None:
                    conn = await asyncio.wait_for(self.r.connect(**self.connect_kwargs), 5)
                query = self.r.db(self.database).table(self.table).insert(doc, conflict="replace")
                await asyncio.wait_for(query.run(conn), 10)
                return conn
            except (ReqlError, OSError, asyncio.TimeoutError):
                self.retried += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(noreply_wait=False)
                    conn = None
                await asyncio.sleep(RETRY_PAUSE)  # the application's retry pause

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_at = loop.time()
        conn = None
        try:
            while not self._stopping:
                self.n += 1
                key = f"x{self.n}"
                conn = await self._write(conn, {"id": key, "x": self.n})
                self.acknowledged.add(key)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - loop.time()))  # the writer's pacing
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(noreply_wait=False)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop after the write under way, or at once after ``timeout`` (a cluster that
        cannot take writes any more: that write is not counted as acknowledged)."""
        self._stopping = True
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
            await asyncio.wait({self._task})
        elif (error := self._task.exception()) is not None:
            raise error  # the writer itself failed: the test must see it

    def missing_from(self, table: dict[Any, Any]) -> list[str]:
        return sorted(key for key in self.acknowledged if table.get(key, {}).get("x") is None)
