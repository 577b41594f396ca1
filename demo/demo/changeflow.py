"""The demo's hook: a per-table change counter, kept in ``changeflow_demo.stats``.

Found automatically (``<project>.changeflow``). Every change of every table
counts; the counters are written back through a push at most twice a second,
so the hook costs one write per table per half second, not one per change.
"""

from __future__ import annotations

import asyncio
import logging

from changeflow_channels import apush_to_flow

logger = logging.getLogger("changeflow_channels")

STATS_DB, STATS_TABLE = "changeflow_demo", "stats"
FLUSH_EVERY = 0.5

counts: dict[str, int] = {}
_dirty: set[str] = set()
_flusher: asyncio.Task[None] | None = None


async def flow_handlers(database: str, table: str, change: dict) -> None:
    global _flusher
    if (database, table) == (STATS_DB, STATS_TABLE):
        return  # our own writes: counting them would never settle
    stream = f"{database}.{table}"
    counts[stream] = counts.get(stream, 0) + 1
    _dirty.add(stream)
    if _flusher is None or _flusher.done():
        _flusher = asyncio.ensure_future(_flush_soon())


async def _flush_soon() -> None:
    await asyncio.sleep(FLUSH_EVERY)
    streams = sorted(_dirty)
    _dirty.clear()
    documents = [{"id": stream, "changes": counts[stream]} for stream in streams]
    try:
        await apush_to_flow(STATS_DB, STATS_TABLE, documents, op="upsert")
    except Exception:
        logger.exception("demo: could not write the change counters")
