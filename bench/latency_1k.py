"""Latency at load: documents written one by one at 1,000 per second (on
schedule), from the write to each of 100 subscribed websocket clients' receipt
(two client processes of 50). The CPU of each process over that time (percent
of one core) says which part binds."""

from __future__ import annotations

import contextlib
import json
import os

from . import driver, stack
from .clients_10k import collect_all
from .e2e import check

NAME = "latency_1k"
DESCRIPTION = "p50/p95/p99 write -> browser at 1,000 changes/s to 100 clients"

RATE = 1000.0
CLIENTS = 100
PROCESSES = 2
TABLE = "latency_1k"


async def run(quick: bool = False) -> dict[str, float]:
    count = int(RATE * (3 if quick else 10))
    stack.get()
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, TABLE)
        async with contextlib.AsyncExitStack() as exits:
            processes = [
                await exits.enter_async_context(driver.ClientProcess()) for _ in range(PROCESSES)
            ]
            for clients in processes:
                await clients.connect(CLIENTS // PROCESSES, TABLE)
            await collect_all(processes, driver.write_end(r, conn, TABLE, -1))  # warm-up
            for clients in processes:
                await clients.send("collect", timeout=120, expected=count + 1)
            for clients in processes:
                await clients.answer()
            pids = {
                **stack.get().part_pids(),
                "bench": os.getpid(),
                **{f"clients{k}": c.process.pid for k, c in enumerate(processes)},  # type: ignore[union-attr]
            }
            meter = stack.CpuMeter(pids)
            await driver.write_at_rate(r, conn, TABLE, RATE, count)
            results = [await clients.answer(150) for clients in processes]
            cpu = meter.percentages("latency_1k")
    finally:
        await conn.close(noreply_wait=False)
    latencies: list[float] = []
    for result in results:
        check(result, "latency at 1,000/s")
        latencies.extend(result["latencies"])
    stack.RESULTS.mkdir(exist_ok=True)
    (stack.RESULTS / "latency_1k.json").write_text(json.dumps(latencies))
    return {
        "latency_1k_p50_ms": driver.percentile(latencies, 0.50),
        "latency_1k_p95_ms": driver.percentile(latencies, 0.95),
        "latency_1k_p99_ms": driver.percentile(latencies, 0.99),
        **cpu,  # percent of one core per process while writing and receiving
    }
