"""Daphne's memory with 100 clients that never read while a table changes fast (issue 14,
case 4, the measurement of item 4). Marked slow.

Each client subscribes, then reads nothing; 2,000 changes of 10 KB are written (20 MB
per client). Daphne never blocks a send: without flow control it buffered everything
for every client (its RSS grew with the writes, without bound). With the acknowledged
window each client holds at most about CHANGEFLOW_SEND_WINDOW_BYTES in Daphne, and is
closed once its send queue is full. The figures go to test-output/slow_readers_rss.txt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    ManagedProcess,
    free_port,
    start_daphne,
)

from ..conftest import save_output
from .conftest import REPO
from .helpers import receive

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("worker")]

CLIENTS = 100
CHANGES = 2000
DOC_BYTES = 10_000
OUTPUT = Path(REPO) / "test-output" / "slow_readers_rss.txt"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def own_daphne(process_env) -> Iterator[tuple[str, ManagedProcess]]:
    port = free_port()
    process = start_daphne("tests.asgi:application", port, env=process_env, cwd=str(REPO))
    process.wait_for(DAPHNE_READY, timeout=60)
    yield f"ws://127.0.0.1:{port}/ws/changeflow/", process
    process.stop()
    save_output("daphne_slow_readers", process)


async def test_daphne_memory_with_100_clients_that_never_read(own_daphne, layer, stream_db):
    url, daphne = own_daphne
    pid = daphne.process.pid
    table = "fast"
    stream = f"{stream_db}.{table}"

    async def push(data: object) -> None:
        reply = await layer.new_channel()
        message = {"type": "changeflow.push", "database": stream_db, "table": table}
        await layer.send("changeflow", {**message, "data": data, "reply_channel": reply})
        assert (await receive(layer, reply, timeout=60))["ok"] is True

    await push({"id": "first"})
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    clients = []
    for n in range(CLIENTS):
        client = await websockets.connect(url, origin=origin, max_queue=1, open_timeout=20)
        await client.send(json.dumps({"action": "subscribe", "stream": stream, "id": n}))
        clients.append(client)
    await asyncio.sleep(2)  # every subscription taken
    before = rss_mib(pid)
    peak = before
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mib(pid))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    sampler = asyncio.ensure_future(sample())
    loop = asyncio.get_running_loop()
    started = loop.time()
    pad = "m" * DOC_BYTES
    for start in range(0, CHANGES, 50):
        await push([{"id": f"{start}-{n}", "pad": pad} for n in range(50)])
    written = loop.time() - started
    await asyncio.sleep(10)  # Daphne sends (or holds) what the writes made
    stop.set()
    await sampler
    after = rss_mib(pid)

    async def close_code(client: websockets.ClientConnection) -> int | None:
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            async with asyncio.timeout(30):
                async for _ in client:
                    pass
        return client.close_code

    codes = await asyncio.gather(*(close_code(client) for client in clients))
    for client in clients:
        await client.close()
    closed = sum(code in (4009, 1006) for code in codes)
    report = (
        f"{CLIENTS} clients that never read, {CHANGES} changes of {DOC_BYTES} bytes "
        f"written in {written:.1f} s: Daphne RSS {before:.0f} MiB before, peak {peak:.0f} MiB, "
        f"{after:.0f} MiB 10 s after the writes; {closed} clients closed (4009, or 1006 for "
        f"a close frame never read), close codes {sorted(set(map(str, codes)))}\n"
    )
    OUTPUT.parent.mkdir(exist_ok=True)
    with OUTPUT.open("a") as out:
        out.write(report)
    print(report)
    # About the window per client (2 MiB), not what was written (20 MB per client).
    assert peak - before < CLIENTS * 4, report
    assert closed == CLIENTS, report
