"""The fault matrix (issue 14, item 10), continued: Daphne killed under its clients, a
table dropped and re-created, clients that leave and resume with ``since``, and a
sender that retries pushes whose answers it did not get."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ..polling import send_when_room
from .clients import idempotency_supported
from .scenario import QUIET_BURST, Scenario
from .stack import FaultStack

pytestmark = pytest.mark.slow
LOADS = ["quiet", "busy"]


@pytest.mark.parametrize("load", LOADS)
async def test_daphne_sigkill_clients_move_to_another(scenario, fault_stack: FaultStack, load):
    s: Scenario = scenario("daphne-sigkill", load)

    async def kill_daphne() -> None:
        old = fault_stack.port
        new = await asyncio.to_thread(fault_stack.start_daphne)
        for client in s.clients:  # they reconnect there by themselves, with since
            client.url, client.origin = fault_stack.url(new), fault_stack.origin(new)
        await asyncio.to_thread(fault_stack.kill_daphne, old)

    await s.run("Daphne SIGKILL; clients resume with since on a second Daphne", kill_daphne)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_table_dropped_and_recreated(scenario, load):
    s: Scenario = scenario("table-dropped-recreated", load)

    async def drop_and_create() -> None:
        database, table = s.database, s.table
        await s.tables._run(lambda r: r.db(database).table_drop(table), 20)
        # What was in the table is gone with it: neither lost pushes nor update targets.
        s.writer.live.clear()
        s.ignore_pushes_up_to = s.writer.n
        await s.create_table()

    await s.run("table dropped and re-created with the driver", drop_and_create)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_clients_leave_and_resume_with_since(scenario, load):
    s: Scenario = scenario("client-resumes-with-since", load)

    async def away() -> None:
        for client in s.clients:
            await client.disconnect()
        if load == "busy":
            await s.writer.wait_accepted(s.writer.accepted + 100, 30)
        else:
            await s.writer.burst(QUIET_BURST)
        for client in s.clients:
            await client.resume()

    await s.run("clients disconnect, miss writes, resume with since", away)
    s.assert_ok()
    s.metrics["resumed_without_resync"] = all(not s.sub(c).resyncs for c in s.clients)


NO_KEY_PUSHES = 5  # documents without their own primary key (RethinkDB generates it)


@pytest.mark.parametrize("load", LOADS)
async def test_sender_retries_pushes_whose_answers_it_lost(scenario, load):
    """The answers of some pushes go to a reply channel nobody reads (the sender lost
    them); it sends each such push again, with the same idempotency key: each must be
    answered ok and be in the table once. Some documents have their own primary key,
    some do not (a retry without the key would write those twice)."""
    s: Scenario = scenario("sender-retries-lost-answers", load)
    no_key_answers: list[dict[str, Any]] = []

    def no_key_push(i: int, reply: str) -> dict[str, Any]:
        message = {
            "type": "changeflow.push",
            "database": s.database,
            "table": s.table,
            "data": {"m": f"nokey{i}", "w": s.fault_w + 0.5, "g": 0},
            "reply_channel": reply,
            "id": f"nokey{i}",
        }
        if s.writer.keys is not None:
            message["idempotency_key"] = f"{s.writer.keys}-nokey{i}"
        return message

    async def lose_answers() -> None:
        s.writer.lost_reply = lost = await s.layer.new_channel()  # nobody reads it
        try:
            for i in range(NO_KEY_PUSHES):
                await send_when_room(s.layer, s.writer.channel, no_key_push(i, lost))
            if load == "busy":
                # A quarter of a second of pushes whose answers are lost: about 50, fewer
                # than a reply channel holds (100), which the worker would then block on.
                await asyncio.sleep(0.25)
            else:
                for _ in range(QUIET_BURST):
                    await s.writer.push_next()
        finally:
            s.writer.lost_reply = None
        s.metrics["retried_pushes"] = await s.writer.retry_unanswered() + NO_KEY_PUSHES
        reply = await s.layer.new_channel()
        for i in range(NO_KEY_PUSHES):
            await send_when_room(s.layer, s.writer.channel, no_key_push(i, reply))
        for _ in range(NO_KEY_PUSHES):
            no_key_answers.append(await asyncio.wait_for(s.layer.receive(reply), 20))

    await s.run("a sender retries the pushes whose answers it lost", lose_answers)
    refused = [
        f"push #{n}: {s.writer.pushes[n].answer}"
        for n in sorted(s.writer.retried)
        if not (s.writer.pushes[n].answer or {}).get("ok")
    ]
    refused += [f"{a.get('id')}: {a}" for a in no_key_answers if not a.get("ok")]
    table = await s.reload(s.stream)
    copies = [
        sum(1 for doc in table.values() if doc.get("m") == f"nokey{i}")
        for i in range(NO_KEY_PUSHES)
    ]
    s.metrics["retries_refused"] = len(refused)
    s.metrics["no_key_copies"] = copies
    assert s.writer.retried, "no answer was lost: the scenario proved nothing"
    if not idempotency_supported():
        s.problems.append("pushes take no idempotency_key yet (issue 14, item 3)")
    s.problems += [f"retried and refused: {r}" for r in refused[:10]]
    s.problems += [f"nokey{i} written {n} times" for i, n in enumerate(copies) if n != 1]
    s.record(table)
    s.assert_ok()
