"""Pushes against the database's batched-insert ceiling, measured in the same run:
from one sending process (8 concurrent tasks through ``apush_to_flow``) and from
100 websocket connections pushing at once through one Daphne.

- ``push_api_per_s``: 8 tasks each send their pushes with ``wait=False``, the last
  with ``wait=True`` (as ``bench.pushes``, but through ``apush_to_flow``);
- ``push_api_wait_per_s``: 8 tasks, each push awaited (``wait=True``) before the next;
- ``push_ws_per_s``: 100 connections each send ``WS_PUSHES`` push frames at once (within
  the default per-connection burst), from the first sent to the last ``pushed``.

The sender runs in a process of its own (``python -m bench.push_batching send ...``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

import websockets
from channels.exceptions import ChannelFull

from . import driver, reql_server, stack

NAME = "push_batching"
DESCRIPTION = (
    "pushes/s (8 tasks of one process; 100 websocket connections) ÷ batched-insert ceiling"
)

TASKS = 8
CONNECTIONS = 100
WS_PUSHES = 30  # per connection: within the default burst (2 x CHANGEFLOW_PUSH_RATE)


async def _ceiling(seconds: float) -> float:
    db = "bench_pb_" + uuid.uuid4().hex[:8]
    r, conn = await driver.connect(db)
    try:
        await r.db_create(db).run(conn)
        await r.table_create("batched").run(conn)
        per_s = await reql_server.insert_batched(r, conn, "batched", seconds)
        await r.db_drop(db).run(conn)
    finally:
        await conn.close(noreply_wait=False)
    return per_s


async def _send(count: int, wait_each: bool) -> tuple[float, float]:
    """In the sending process: ``count`` pushes from ``TASKS`` tasks; pushes/s and the
    process's own CPU over them (percent of one core)."""
    import django

    django.setup()
    from changeflow_channels.push_api import apush_to_flow

    full = 0

    async def task(part: range) -> None:
        nonlocal full
        for n in part:
            wait = wait_each or n == part[-1]
            while True:
                try:
                    await apush_to_flow(stack.DATABASE, "pushes", {"n": n}, wait=wait, timeout=120)
                    break
                except ChannelFull:  # the worker's pace (as bench.pushes): wait for room
                    full += 1
                    await asyncio.sleep(0.002)

    parts = [range(start, count, TASKS) for start in range(TASKS)]
    started, cpu_started = time.monotonic(), time.process_time()
    await asyncio.gather(*(task(part) for part in parts))
    elapsed = time.monotonic() - started
    sys.stderr.write(f"channel full {full} times\n")
    return count / elapsed, (time.process_time() - cpu_started) / elapsed * 100


async def _sender(count: int, wait_each: bool, prefix: str) -> tuple[float, dict[str, float]]:
    """``_send`` in a process of its own: pushes/s, and each part's CPU meanwhile."""
    env = {**os.environ, **stack.get().env}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.push_batching", "send", str(count), str(int(wait_each)),
        stdout=asyncio.subprocess.PIPE, cwd=str(stack.REPO), env=env,
    )  # fmt: skip
    meter = stack.CpuMeter(stack.get().part_pids())
    out, _ = await asyncio.wait_for(process.communicate(), 300)
    cpu = meter.percentages(prefix)
    if process.returncode != 0:
        raise RuntimeError(f"the sending process failed ({process.returncode})")
    per_s, sender_cpu = map(float, out.decode().split()[-2:])
    return per_s, {**cpu, f"{prefix}_cpu_sender_pct": sender_cpu}


async def _websockets() -> tuple[float, int, dict[str, float]]:
    url = stack.get().ws_url
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    sockets = [
        await websockets.connect(url, origin=origin, open_timeout=60, max_queue=None)
        for _ in range(CONNECTIONS)
    ]
    stream = f"{stack.DATABASE}.pushes"
    pushed: list[int] = []
    errors: dict[str, int] = {}

    async def push_all(index: int, ws: Any) -> None:
        for n in range(WS_PUSHES):
            frame = {"action": "push", "stream": stream, "data": {"c": index, "n": n}, "id": n}
            await ws.send(json.dumps(frame))
        answered = 0
        async for raw in ws:
            frame = json.loads(raw)
            if frame.get("event") == "pushed":
                answered += 1
                pushed.append(1)
            elif frame.get("event") == "error":
                answered += 1
                errors[frame.get("message", "")] = errors.get(frame.get("message", ""), 0) + 1
            if answered == WS_PUSHES:
                return

    try:
        meter = stack.CpuMeter({**stack.get().part_pids(), "clients": os.getpid()})
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(push_all(i, ws) for i, ws in enumerate(sockets))), 120
        )
        elapsed = time.monotonic() - started
        cpu = meter.percentages("push_ws")
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    if errors:  # counted, not hidden: pushes answered with an error are not in the figure
        sys.stderr.write(f"websocket pushes refused: {errors}\n")
    return len(pushed) / elapsed, sum(errors.values()), cpu


async def run(quick: bool = False) -> dict[str, float]:
    count = 4_000 if quick else 16_000
    stack.get()
    ceiling = await _ceiling(2.0 if quick else 5.0)
    api, api_cpu = await _sender(count, False, "push_api")
    api_wait, _ = await _sender(count // 4, True, "push_api_wait")
    ws, ws_errors, ws_cpu = await _websockets()
    return {
        "ceiling_insert_per_s": ceiling,
        "push_api_per_s": api,
        "push_api_ratio": api / ceiling,
        "push_api_wait_per_s": api_wait,
        "push_api_wait_ratio": api_wait / ceiling,
        "push_ws_per_s": ws,
        "push_ws_ratio": ws / ceiling,
        "push_ws_errors": ws_errors,
        **api_cpu,  # percent of one core per process: which part binds
        **ws_cpu,
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["send"]:
        per_s, cpu_pct = asyncio.run(_send(int(sys.argv[2]), bool(int(sys.argv[3]))))
        sys.stdout.write(f"{per_s} {cpu_pct}\n")
    else:
        sys.stdout.write(json.dumps(asyncio.run(run(quick="--quick" in sys.argv))) + "\n")
