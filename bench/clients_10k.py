"""Many clients: one Daphne holding 10,000 subscribed websocket clients, opened by
several client processes on loopback; Daphne's RSS per client and the time until
the last of them has one change (median of three single changes).

``--quick`` holds 2,000 clients (``clients_10k_count`` says how many were held),
to keep the quick run under five minutes; the full run holds 10,000.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
from typing import Any

from . import driver, stack

NAME = "clients_10k"
DESCRIPTION = "one Daphne holding 10,000 subscribed clients: RSS per client, ms to the last"

FULL, QUICK = 10_000, 2_000
PROCESSES = 4  # client processes, each opening its share
AT_ONCE = 8  # handshakes in flight per process (Daphne's listen backlog is 50)
ROUNDS = 3
TABLE = "clients_10k"


async def collect_all(
    processes: list[driver.ClientProcess], write: Any, timeout: float = 120
) -> list[dict[str, Any]]:
    """``ClientProcess.collect`` over several processes: all armed, one write; each
    waits for every client's end marker until ``timeout`` (a pause between two
    receipts is not taken for a loss here: one change to 10,000 clients has them)."""
    for clients in processes:
        await clients.send("collect", timeout=timeout, quiet=timeout)
    for clients in processes:
        await clients.answer()  # armed
    await write
    return [await clients.answer(timeout + 30) for clients in processes]


async def run(quick: bool = False) -> dict[str, float]:
    count = QUICK if quick else FULL
    the_stack = stack.get()
    daphne = the_stack.pid("daphne")
    nofile = stack.raise_nofile()  # the client processes inherit it
    if nofile < count + 1000:
        count = nofile - 1000  # Daphne holds one descriptor per client: the most it can
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, TABLE)
        async with contextlib.AsyncExitStack() as exits:
            processes = [
                await exits.enter_async_context(driver.ClientProcess()) for _ in range(PROCESSES)
            ]
            rss_before = stack.rss_mb(daphne)
            shares = [count // PROCESSES + (k < count % PROCESSES) for k in range(PROCESSES)]
            url, stream = the_stack.ws_url, f"{stack.DATABASE}.{TABLE}"
            opened = await asyncio.gather(
                *(
                    clients.request("connect", url=url, n=share, stream=stream, at_once=AT_ONCE)
                    for clients, share in zip(processes, shares, strict=True)
                )
            )
            held = sum(answer["clients"] for answer in opened)
            for answer in opened:
                if answer["errors"]:
                    sys.stderr.write(f"#   handshakes refused or cut: {answer['errors']}\n")
            rss = stack.rss_mb(daphne)
            lasts = []
            for n in range(ROUNDS):
                results = await collect_all(processes, driver.write_end(r, conn, TABLE, n))
                if any(result["timed_out"] for result in results):
                    reached = sum(result["ended"] for result in results)
                    raise RuntimeError(f"round {n}: {reached} of {held} clients reached")
                entries = [result["by_n"][str(n)] for result in results]
                sent = entries[0][0]
                lasts.append((max(entry[2] for entry in entries) - sent) * 1000)
    finally:
        await conn.close(noreply_wait=False)
    return {
        "clients_10k_count": held,
        "clients_10k_connect_s": max(answer["connect_s"] for answer in opened),
        "clients_10k_handshake_retries": sum(answer["retries"] for answer in opened),
        "clients_10k_not_opened": sum(answer["failed"] for answer in opened),
        "clients_10k_daphne_rss_mb": rss,
        "clients_10k_rss_kb_per_client": (rss - rss_before) * 1024 / held,
        "clients_10k_last_ms": statistics.median(lasts),
    }
