"""Fan-out: one change to N subscribed clients (time until the last has it), and
sustained changes per second to many clients; Daphne's memory with 1,000 idle
subscribed clients."""

from __future__ import annotations

import json
import statistics
import sys
from typing import Any

from . import driver, stack

NAME = "fanout"
DESCRIPTION = "one change to N clients (ms to the last), sustained frames/s to N clients"

ROUNDS = 5  # single changes per size; the median is reported
SUSTAINED_CLIENTS = 100  # fanout_frames_per_s; ceiling_ws uses as many
DELIVERIES = 40_000  # change frames per sustained measure, over all clients


async def single(clients: driver.ClientProcess, r: Any, conn: Any) -> dict[str, float]:
    """Median over ``ROUNDS`` of one change: ms to the first and to the last client."""
    firsts, lasts = [], []
    for n in range(ROUNDS):
        # Every client must get it: no pause between two receipts ends the round early
        # (on a loaded machine one change to 1,000 clients has pauses of seconds).
        result = await clients.collect(driver.write_end(r, conn, "fanout", n), timeout=30, quiet=30)
        if result["timed_out"]:  # every client must get it; resyncs are counted elsewhere
            raise RuntimeError(f"fan-out round {n}: {result['ended']} clients reached")
        sent, first, last, _ = result["by_n"][str(n)]
        firsts.append((first - sent) * 1000)
        lasts.append((last - sent) * 1000)
    return {"first_ms": statistics.median(firsts), "last_ms": statistics.median(lasts)}


async def sustained(
    clients: driver.ClientProcess, r: Any, conn: Any, n: int, quick: bool
) -> dict[str, float]:
    """Change frames per second over ``n`` clients, the table written as fast as it goes."""
    count = max(1000, (DELIVERIES // (2 if quick else 1)) // n)
    result = await clients.collect(
        driver.write_burst(r, conn, "fanout", count), timeout=120, expected=count + 1
    )
    seconds = result["last"] - result["first"]
    return {
        "frames_per_s": result["changes"] / seconds,
        "messages_per_s": result["messages"] / seconds,
        "lost": (count + 1) * n - result["changes"],
        "resyncs": result["resyncs"],
        "ended": result["ended"],
    }


async def run(quick: bool = False) -> dict[str, float]:
    sizes = [1, 10, 100, 1000]
    daphne = stack.get().pid("daphne")
    figures: dict[str, float] = {}
    curve: dict[str, Any] = {}
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, "fanout")
        async with driver.ClientProcess() as clients:
            connected = 0
            await clients.connect(1, "fanout")
            await clients.collect(driver.write_end(r, conn, "fanout", -1))  # warm-up
            connected = 1
            for size in sizes:
                if size > connected:
                    if size == 1000:
                        rss_before = stack.rss_mb(daphne)
                    await clients.connect(size - connected, "fanout")
                    connected = size
                    if size == 1000:
                        rss = stack.rss_mb(daphne)
                        figures["daphne_rss_mb_1000_clients"] = rss
                        figures["daphne_rss_kb_per_client"] = (rss - rss_before) * 1024 / 1000
                point = await single(clients, r, conn)
                if size <= SUSTAINED_CLIENTS or not quick:
                    point.update(await sustained(clients, r, conn, size, quick))
                curve[str(size)] = point
                print_point(size, point)
    finally:
        await conn.close(noreply_wait=False)
    largest = max(sizes)
    figures.update(
        {
            "fanout_clients": largest,
            "fanout_last_ms": curve[str(largest)]["last_ms"],
            "fanout_first_ms": curve[str(largest)]["first_ms"],
            "fanout_frames_per_s": curve[str(SUSTAINED_CLIENTS)]["frames_per_s"],
            "fanout_lost": curve[str(SUSTAINED_CLIENTS)]["lost"],
        }
    )
    stack.RESULTS.mkdir(exist_ok=True)
    (stack.RESULTS / "fanout_curve.json").write_text(json.dumps(curve, indent=2))
    return figures


def print_point(size: int, point: dict[str, float]) -> None:
    shown = ", ".join(f"{key} {value:,.1f}" for key, value in point.items())
    sys.stderr.write(f"#   {size} clients: {shown}\n")
