"""The database's own limits, on the stack's RethinkDB: single and batched driver
inserts, and changes to one bare driver feed reader (``bench.reql_server``'s measures)."""

from __future__ import annotations

import uuid

from . import driver, reql_server, stack

NAME = "ceilings_db"
DESCRIPTION = "single and batched inserts/s, changes/s to a bare feed reader (the source's limits)"


async def run(quick: bool = False) -> dict[str, float]:
    seconds = 2.0 if quick else 5.0
    db = "bench_db_" + uuid.uuid4().hex[:8]
    stack.get()
    r, conn = await driver.connect(db)
    _, reader = await driver.connect(db)
    try:
        await r.db_create(db).run(conn)
        for table in ("single", "batched", "feed"):
            await r.table_create(table).run(conn)
        figures = {
            "insert_single_per_s": await reql_server.insert_single(r, conn, "single", seconds),
            "ceiling_insert_per_s": await reql_server.insert_batched(r, conn, "batched", seconds),
            "ceiling_feed_per_s": await reql_server.feed_changes(r, reader, conn, "feed", seconds),
        }
        await r.db_drop(db).run(conn)
    finally:
        await reader.close(noreply_wait=False)
        await conn.close(noreply_wait=False)
    return figures
