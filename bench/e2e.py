"""Feed to browser: a table written with the driver, read by websocket clients.

Saturation: documents written in batches as fast as the database takes them,
changes per second received by one subscribed client. Latency: documents written
one by one at a moderate rate, from the write to each client's receipt.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from . import driver, stack

NAME = "e2e"
DESCRIPTION = "feed to browser: changes/s to one client at saturation; latency at 200/s"

RATE = 200.0
CLIENTS = 10


def check(result: dict[str, Any], what: str) -> None:
    """Order and continuity as the clients saw them."""
    if result["gaps"] or result["resyncs"] or result["timed_out"]:
        raise RuntimeError(
            f"{what}: {result['gaps']} gaps, resyncs {result['reasons']}, "
            f"{result['changes']} changes, timed out: {result['timed_out']}"
        )


async def saturation(quick: bool) -> dict[str, float]:
    count = 20_000 if quick else 60_000
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, "e2e_saturation")
        async with driver.ClientProcess() as clients:
            await clients.connect(1, "e2e_saturation")
            await clients.collect(driver.write_end(r, conn, "e2e_saturation", -1))  # warm-up
            result = await clients.collect(
                driver.write_burst(r, conn, "e2e_saturation", count),
                timeout=120,
                expected=count + 1,
            )
    finally:
        await conn.close(noreply_wait=False)
    # Beyond what the parts can carry, the channel layer drops messages: the
    # client is told (resync), and the changes it got still count.
    seconds = result["last"] - result["first"]
    return {
        "e2e_changes_per_s": result["changes"] / seconds,
        "e2e_changes_per_frame": result["changes"] / result["messages"],
        "e2e_saturation_lost": count + 1 - result["changes"],
        "e2e_saturation_resyncs": result["resyncs"],
        "e2e_saturation_gaps": result["gaps"],
    }


async def latency(quick: bool) -> tuple[dict[str, float], list[float]]:
    count = int(RATE * (3 if quick else 10))
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, "e2e_latency")
        async with driver.ClientProcess() as clients:
            await clients.connect(CLIENTS, "e2e_latency")
            await clients.collect(driver.write_end(r, conn, "e2e_latency", -1))
            result = await clients.collect(
                driver.write_at_rate(r, conn, "e2e_latency", RATE, count), expected=count + 1
            )
    finally:
        await conn.close(noreply_wait=False)
    check(result, "latency")
    latencies = result["latencies"]
    return {
        "e2e_rate_per_s": RATE,
        "e2e_clients": CLIENTS,
        "e2e_latency_p50_ms": driver.percentile(latencies, 0.50),
        "e2e_latency_p95_ms": driver.percentile(latencies, 0.95),
        "e2e_latency_p99_ms": driver.percentile(latencies, 0.99),
    }, latencies


async def run(quick: bool = False) -> dict[str, float]:
    stack.get()
    figures = await saturation(quick)
    latency_figures, latencies = await latency(quick)
    figures.update(latency_figures)
    stack.RESULTS.mkdir(exist_ok=True)
    (stack.RESULTS / "e2e_latencies.json").write_text(json.dumps(latencies))
    await asyncio.sleep(0)
    return figures
