"""The fault matrix (issue 14, item 10), continued: loads rather than crashes. 1,000
clients connecting at once and 500 of them leaving at once; a snapshot larger than
1 MiB; a document that grows past 1 MiB by pushes of 60 KB."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .clients import MatrixViewClient
from .scenario import Scenario

pytestmark = pytest.mark.slow
LOADS = ["quiet", "busy"]
CROWD = 1000
LEAVING = 500
CROWD_BUSY_RATE = 20.0  # changes a second while the crowd comes and goes (busy)
BIG_SNAPSHOT_DOCS = 700  # of 1.6 KB: about 1.1 MB, below CHANGEFLOW_SNAPSHOT_LIMIT (1,000)
GROWTH_PUSHES = 18  # of 60 KB each: the document ends at about 1.08 MB


@pytest.mark.parametrize("load", LOADS)
async def test_a_thousand_clients_connect_and_half_leave_at_once(scenario, fault_stack, load):
    """Busy here is CROWD_BUSY_RATE changes a second, not 200: to 1,000 subscribers
    200 changes a second are 200,000 frames a second, more than one Daphne on this
    2-core machine serves (a capacity limit, not a fault)."""
    s: Scenario = scenario("1000-clients-connect-500-leave", load)
    s.writer.rate = CROWD_BUSY_RATE
    crowd: list[MatrixViewClient] = []

    async def join(n: int) -> str | None:
        client = MatrixViewClient(fault_stack.url(), fault_stack.origin(), f"crowd{n}", s.reload)
        crowd.append(client)
        try:
            await client.connect()
            await client.subscribe(s.stream, snapshot=True)
        except Exception as error:  # counted: every refusal is a failure of the scenario
            return f"crowd{n}: {error!r}"
        return None

    async def storm() -> None:
        refused = [e for e in await asyncio.gather(*(join(n) for n in range(CROWD))) if e]
        s.metrics["subscribes_refused"] = len(refused)
        s.problems += refused[:10]
        await asyncio.gather(*(client.close() for client in crowd[:LEAVING]))
        for client in crowd[LEAVING:]:  # the stayers are checked like the others
            if s.stream in client.subscriptions and client.connection is not None:
                s.clients.append(client)
                s.expected[client.name] = dict
            else:
                await client.close()

    await s.run(f"{CROWD} clients subscribe at once, {LEAVING} leave at once", storm)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_snapshot_larger_than_a_mebibyte(scenario, load):
    s: Scenario = scenario("snapshot-over-1MiB", load)
    s.prefill = [
        {"id": f"p{i}", "w": 0, "g": i % 3, "pad": "x" * 1600} for i in range(BIG_SNAPSHOT_DOCS)
    ]

    async def late_subscriber() -> None:
        await s.add_client("late-snapshot", snapshot=True)

    await s.run("a snapshot of about 1.1 MB, to a client subscribing mid-stream", late_subscriber)
    s.assert_ok()
    sizes = [len(f["documents"]) for c in s.clients for _, f in s.sub(c).snapshots]
    assert max(sizes) >= BIG_SNAPSHOT_DOCS, sizes


@pytest.mark.parametrize("load", LOADS)
async def test_document_grows_past_a_mebibyte(scenario, load):
    """Each client either gets every change of the document or a ``too_large`` error
    for it (then it reloads); either way its view ends equal to the table, and its
    connection keeps serving (the round trip)."""
    s: Scenario = scenario("document-grows-past-1MiB", load)
    answers: list[dict[str, Any]] = []

    async def grow() -> None:
        reply = await s.layer.new_channel()
        for i in range(GROWTH_PUSHES):
            message = {
                "type": "changeflow.push",
                "database": s.database,
                "table": s.table,
                "data": {"id": "big", "w": 0, "g": 0, f"part{i}": "y" * 60_000},
                "op": "upsert",
                "reply_channel": reply,
                "id": f"big{i}",
            }
            await s.layer.send(s.writer.channel, message)
        for _ in range(GROWTH_PUSHES):  # sent at once: written in order, answered later
            answers.append(await asyncio.wait_for(s.layer.receive(reply), 30))

    await s.run(f"a document grown to about 1.08 MB by {GROWTH_PUSHES} pushes of 60 KB", grow)
    refused = [a for a in answers if not a.get("ok")]
    s.problems += [f"growth push refused: {a}" for a in refused[:5]]
    s.metrics["too_large_errors"] = sum(
        len(getattr(s.sub(c), "too_large", [])) for c in s.clients if s.stream in c.subscriptions
    )
    s.record({})
    s.assert_ok()
