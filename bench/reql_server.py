"""Throughput of the ReQL test server (or a real RethinkDB) through the asyncio driver.

The server runs in its own process (the test server's CLI), as a real RethinkDB
would, unless ``CHANGEFLOW_TEST_RETHINKDB`` names a real one or
``CHANGEFLOW_TEST_RETHINKDB_BIN`` a ``rethinkdb`` binary to start one with. Every figure is
measured over a fixed time window, so the whole scenario stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from rethinkdb import RethinkDB

from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.testing.processes import RethinkDBServer

NAME = "reql_server"
DESCRIPTION = "inserts/s (single, batched) and changes/s to one feed reader, asyncio driver"

BATCH = 100
STARTUP_TIMEOUT = 20.0


@contextlib.asynccontextmanager
async def rethinkdb_url() -> AsyncIterator[str]:
    """``CHANGEFLOW_TEST_RETHINKDB``, a real server of ``CHANGEFLOW_TEST_RETHINKDB_BIN``,
    or a ReQL test server started in a subprocess."""
    real = os.environ.get("CHANGEFLOW_TEST_RETHINKDB")
    if real:
        yield real
        return
    binary = os.environ.get("CHANGEFLOW_TEST_RETHINKDB_BIN")
    if binary:
        server = RethinkDBServer(binary)
        try:
            await asyncio.to_thread(server.start)
            yield server.url
        finally:
            await asyncio.to_thread(server.close)
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "changeflow_channels.testing",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
        yield line.decode().strip().rsplit(" ", 1)[-1]
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


async def insert_single(r: RethinkDB, conn: Any, table: str, seconds: float) -> float:
    """Documents/s inserted one per query, each awaited before the next."""
    count = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        await r.table(table).insert({"n": count, "kind": "single"}).run(conn)
        count += 1
    return count / (time.monotonic() - started)


async def insert_batched(r: RethinkDB, conn: Any, table: str, seconds: float) -> float:
    """Documents/s inserted ``BATCH`` per query."""
    count = 0
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        docs = [{"n": count + i, "kind": "batch"} for i in range(BATCH)]
        await r.table(table).insert(docs).run(conn)
        count += BATCH
    return count / (time.monotonic() - started)


async def feed_changes(r: RethinkDB, reader: Any, writer: Any, table: str, seconds: float) -> float:
    """Changes/s delivered to one feed reader while a writer inserts batches."""
    feed = await r.table(table).changes().run(reader)
    received = 0
    written = 0
    all_written = asyncio.Event()

    async def read() -> None:
        nonlocal received
        while not (all_written.is_set() and received >= written):
            await feed.next()
            received += 1

    reading = asyncio.ensure_future(read())
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        await r.table(table).insert([{"n": written + i} for i in range(BATCH)]).run(writer)
        written += BATCH
    all_written.set()
    try:
        await asyncio.wait_for(reading, max(10.0, seconds * 2))
    except asyncio.TimeoutError:
        pass  # count what arrived; a slow reader shows in the figure
    elapsed = time.monotonic() - started
    await feed.close()
    return received / elapsed


async def run(quick: bool = False) -> dict[str, float]:
    """Run the three measurements; returns figures keyed by name."""
    seconds = 1.0 if quick else 4.0
    r = RethinkDB()
    r.set_loop_type("asyncio")
    db = "bench_" + uuid.uuid4().hex[:8]
    async with rethinkdb_url() as url:
        kwargs = parse_rethinkdb_url(url).connect_kwargs()
        conn = await r.connect(**kwargs, db=db)
        reader = await r.connect(**kwargs, db=db)
        try:
            await r.db_create(db).run(conn)
            for table in ("single", "batched", "feed"):
                await r.table_create(table).run(conn)
            figures = {
                "insert_single_per_s": await insert_single(r, conn, "single", seconds),
                "insert_batch_per_s": await insert_batched(r, conn, "batched", seconds),
                "feed_changes_per_s": await feed_changes(r, reader, conn, "feed", seconds),
            }
            await r.db_drop(db).run(conn)
        finally:
            await reader.close(noreply_wait=False)
            await conn.close(noreply_wait=False)
    return figures
