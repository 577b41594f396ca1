"""Pushes from browsers: 100 websocket connections pushing through one Daphne
(one document each push, at most 4 unanswered per connection), written by the
worker; pushes per second from the first sent to the last answered. ``python -m
bench`` also gives it as a ratio to ``ceiling_insert_per_s`` of the same run
(``push_ws_ratio``)."""

from __future__ import annotations

from . import driver, stack

NAME = "push_ws"
DESCRIPTION = "pushes/s from 100 browser connections through one Daphne"

CONNECTIONS = 100
WINDOW = 4
TABLE = "push_ws"


async def run(quick: bool = False) -> dict[str, float]:
    each = 30 if quick else 100
    the_stack = stack.get()
    r, conn = await driver.connect()
    try:
        await driver.create_table(r, conn, TABLE)
    finally:
        await conn.close(noreply_wait=False)
    async with driver.ClientProcess() as clients:
        pids = {**the_stack.part_pids(), "clients": clients.process.pid}  # type: ignore[union-attr]
        meter = stack.CpuMeter(pids)
        result = await clients.request(
            "push",
            url=the_stack.ws_url,
            n=CONNECTIONS,
            stream=f"{stack.DATABASE}.{TABLE}",
            count=each,
            window=WINDOW,
        )
        cpu = meter.percentages("push_ws")  # percent of one core per process
    if result["errors"]:
        raise RuntimeError(f"pushes from browsers failed: {result['errors']}")
    return {"push_ws_per_s": result["per_s"], "push_ws_count": result["pushed"], **cpu}
