"""The benchmark's side of the parts: the RethinkDB driver (writing documents)
and the websocket client process (``bench.clients``)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from rethinkdb import RethinkDB

from . import stack

BATCH = 100


async def connect(db: str = stack.DATABASE) -> tuple[RethinkDB, Any]:
    """An asyncio driver connection to the stack's RethinkDB."""
    r = RethinkDB()
    r.set_loop_type("asyncio")
    return r, await r.connect(**stack.get().connect_kwargs, db=db)


async def create_table(r: RethinkDB, conn: Any, table: str, db: str = stack.DATABASE) -> None:
    if db not in await r.db_list().run(conn):
        await r.db_create(db).run(conn)
    if table not in await r.db(db).table_list().run(conn):
        await r.db(db).table_create(table).run(conn)
    await r.db(db).table(table).wait().run(conn)


async def write_burst(r: RethinkDB, conn: Any, table: str, count: int) -> float:
    """``count`` documents ``{"n", "t"}`` in batches of ``BATCH``, as fast as the
    database takes them, then the end marker; returns the seconds it took."""
    started = time.monotonic()
    for first in range(0, count, BATCH):
        now = time.time()
        docs = [{"n": n, "t": now} for n in range(first, min(first + BATCH, count))]
        await r.table(table).insert(docs).run(conn)
    await write_end(r, conn, table, count)
    return time.monotonic() - started


async def write_at_rate(r: RethinkDB, conn: Any, table: str, rate: float, count: int) -> None:
    """``count`` documents one by one at ``rate`` per second (on schedule, not
    after each answer), then the end marker."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = set()
    for n in range(count):
        delay = started + n / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(r.table(table).insert({"n": n, "t": time.time()}).run(conn))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    await write_end(r, conn, table, count)


async def write_end(r: RethinkDB, conn: Any, table: str, n: int) -> None:
    await r.table(table).insert({"n": n, "t": time.time(), "end": True}).run(conn)


class ClientProcess:
    """``python -m bench.clients``, driven over its stdin and stdout."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> ClientProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.clients",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(stack.REPO),
            limit=2**30,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def send(self, cmd: str, **arguments: Any) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **arguments}) + "\n").encode())
        await self.process.stdin.drain()

    async def answer(self, timeout: float = 300) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the client process ended")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"client process: {answer['error']}")
        return answer

    async def request(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        await self.send(cmd, **arguments)
        return await self.answer()

    async def connect(self, n: int, table: str) -> dict[str, Any]:
        """``n`` clients subscribed to ``bench.<table>``."""
        url = stack.get().ws_url
        answer = await self.request("connect", url=url, n=n, stream=f"{stack.DATABASE}.{table}")
        if answer["failed"]:
            raise RuntimeError(f"{answer['failed']} of {n} clients not opened: {answer['errors']}")
        return answer

    async def collect(
        self,
        write: Any,
        timeout: float = 120,
        expected: int | None = None,
        quiet: float = 2.0,
    ) -> dict[str, Any]:
        """Arm the clients, await ``write`` (a coroutine), then what they received
        (each client: the end marker and, with ``expected``, that many changes; or
        nothing for ``quiet`` seconds after something came)."""
        await self.send("collect", timeout=timeout, expected=expected, quiet=quiet)
        await self.answer()  # armed
        await write
        return await self.answer(timeout + 30)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
