"""Many tables: a worker of its own following 10,000 tables of the stack's
RethinkDB: its RSS and its time from start to ready (``bench.tables``'s
measure). ``--quick`` follows 1,000 (``tables_10k_count`` says how many), since
creating 10,000 tables takes the real server minutes."""

from __future__ import annotations

import asyncio
from typing import Any

from rethinkdb import RethinkDB

from . import stack, tables

NAME = "many_tables"
DESCRIPTION = "RSS and seconds to ready of a worker following 10,000 tables"

FULL, QUICK = 10_000, 1_000


async def drop(host: str, port: int) -> None:
    r = RethinkDB()
    r.set_loop_type("asyncio")
    conn = await r.connect(host=host, port=port)
    try:
        if tables.DATABASE in await r.db_list().run(conn):
            await r.db_drop(tables.DATABASE).run(conn)
    finally:
        await conn.close(noreply_wait=False)


async def run(quick: bool = False) -> dict[str, float]:
    the_stack = stack.get()
    # A real RethinkDB 2.4 takes about 3 MB per table: 10,000 would need some 30 GB, more
    # than this machine has (24 GB); it follows the quick count there.
    count = QUICK if quick or the_stack.rethinkdb is not None else FULL
    kwargs: dict[str, Any] = the_stack.connect_kwargs
    host, port = str(kwargs["host"]), int(kwargs["port"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    await drop(host, port)
    await tables.create_tables(host, port, count)
    created_s = loop.time() - started
    env = {key: the_stack.env[key] for key in the_stack.env if key != "DJANGO_SETTINGS_MODULE"}
    env["CHANGEFLOW_TEST_RETHINKDB_URL"] = the_stack.rethinkdb_url
    try:
        figures = await asyncio.to_thread(tables.measure, stack.REPO, env, port, 600.0)
    finally:
        await drop(host, port)
    if not figures["ready"]:
        raise RuntimeError(f"the worker following {count} tables never became ready")
    return {
        "tables_10k_count": count,
        "tables_10k_created_s": created_s,
        "tables_10k_ready_s": figures["ready_s"],
        "tables_10k_rss_mb": figures["rss_mb"],
        "tables_10k_peak_rss_mb": figures["peak_rss_mb"],
        "tables_10k_rethinkdb_connections": figures["rethinkdb_connections"],
    }
