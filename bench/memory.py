"""Memory: the peak RSS of a worker following 1,000 tables (a worker of its own,
started once the tables exist, and measured once it takes pushes)."""

from __future__ import annotations

import asyncio

from . import driver, stack

NAME = "memory"
DESCRIPTION = "peak RSS of a worker following 1,000 tables"

DATABASE = "bench_memory"
TABLES = 1000


async def run(quick: bool = False) -> dict[str, float]:
    the_stack = stack.get()
    r, conn = await driver.connect(DATABASE)
    try:
        if DATABASE in await r.db_list().run(conn):
            await r.db_drop(DATABASE).run(conn)
        await r.db_create(DATABASE).run(conn)
        await asyncio.gather(*(r.table_create(f"t{n}").run(conn) for n in range(TABLES)))
        await asyncio.to_thread(the_stack.start_worker, "memory_worker", f"{DATABASE}.*")
        await asyncio.sleep(1.0)  # feeds settle
        pid = the_stack.pid("memory_worker")
        figures = {
            "worker_rss_mb_1000_tables": stack.rss_mb(pid, "VmHWM"),
            "worker_rss_mb_1000_tables_now": stack.rss_mb(pid),
        }
        the_stack.stop("memory_worker")
        await r.db_drop(DATABASE).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    return figures
