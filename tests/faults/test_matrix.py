"""The fault matrix (issue 14, item 10): each fault, quiet and under about 200 pushes a
second, with a plain, a snapshot and a filtered client; see scenario.py for the
invariants and the figures recorded. Faults on RethinkDB, Redis and the workers."""

from __future__ import annotations

import asyncio
import re
import signal

import pytest

from changeflow_channels.testing.processes import wait_stopped

from .scenario import Scenario
from .stack import FEED_QUEUE_SIZE, FaultStack

pytestmark = pytest.mark.slow
LOADS = ["quiet", "busy"]
# RethinkDB frozen for as long as the issue asks (10 s): the worker's keepalive ping
# notices within that, so the feed's restart is exercised, not only a stall.
RETHINKDB_FREEZE_S = 10.0
# Redis frozen for longer than redis-py's 5 s socket timeout (the settings' bare URL).
REDIS_FREEZE_S = 6.0


async def outage(seconds: float) -> None:
    await asyncio.sleep(seconds)  # the fault's duration itself, not a wait for something


@pytest.mark.parametrize("load", LOADS)
async def test_rethinkdb_sigkill_and_restart(scenario, fault_stack: FaultStack, load: str):
    s: Scenario = scenario("rethinkdb-sigkill-restart", load)
    await s.run(
        "RethinkDB SIGKILL, down 1 s, restart with its data",
        lambda: asyncio.to_thread(fault_stack.rethinkdb.restart, keep_data=True, down_for=1.0),
    )
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_rethinkdb_restart_with_data_lost(scenario, fault_stack: FaultStack, load: str):
    s: Scenario = scenario("rethinkdb-data-lost", load)

    async def lose_everything() -> None:
        await asyncio.to_thread(fault_stack.rethinkdb.restart, keep_data=False, down_for=0.5)
        # What was written before is gone with the data: neither lost pushes nor
        # documents to update.
        s.writer.live.clear()
        s.ignore_pushes_up_to = s.writer.n

    await s.run("RethinkDB SIGKILL, restart on an empty data directory", lose_everything)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_rethinkdb_frozen(scenario, fault_stack: FaultStack, load: str):
    s: Scenario = scenario("rethinkdb-frozen", load)

    async def freeze() -> None:
        await asyncio.to_thread(fault_stack.rethinkdb.freeze)
        try:
            await outage(RETHINKDB_FREEZE_S)
        finally:
            s.mark_back()
            await asyncio.to_thread(fault_stack.rethinkdb.thaw)

    await s.run(f"RethinkDB frozen {RETHINKDB_FREEZE_S:g} s (SIGSTOP/SIGCONT)", freeze)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_redis_crash_and_restart(scenario, fault_stack: FaultStack, load: str):
    s: Scenario = scenario("redis-crash-restart", load)
    await s.run(
        "Redis SIGKILL and restart (its data lost)",
        lambda: asyncio.to_thread(fault_stack.crash_redis),
    )
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
async def test_redis_frozen(scenario, fault_stack: FaultStack, load: str):
    s: Scenario = scenario("redis-frozen", load)

    async def freeze() -> None:
        await asyncio.to_thread(fault_stack.freeze_redis)
        try:
            await outage(REDIS_FREEZE_S)
        finally:
            s.mark_back()
            await asyncio.to_thread(fault_stack.thaw_redis)

    await s.run(f"Redis frozen {REDIS_FREEZE_S:g} s (SIGSTOP/SIGCONT)", freeze)
    s.assert_ok()


@pytest.mark.parametrize("load", LOADS)
@pytest.mark.parametrize("workers", [1, 3])
async def test_worker_sigkill(scenario, fault_stack: FaultStack, load: str, workers: int):
    s: Scenario = scenario(f"worker-sigkill-{workers}-of-{workers}", load)
    if workers > 1:
        await asyncio.to_thread(fault_stack.start_workers, workers - len(fault_stack.workers))
        s.several_workers = True

    async def kill_holder() -> None:
        holder = fault_stack.holder_of(s.stream)
        await asyncio.to_thread(fault_stack.kill_worker, holder)
        if workers == 1:  # restarted, as a supervisor would; with 3 the others take over
            await asyncio.to_thread(fault_stack.start_workers, 1)

    await s.run(f"SIGKILL of the worker following the table ({workers} worker(s))", kill_holder)
    s.assert_ok()


# More changes than the workers' feed queue (CHANGEFLOW_FEED_QUEUE_SIZE) holds, made by
# updating a few documents again and again (the table stays within the snapshot limit).
OVERFLOW_DOCS = 100
OVERFLOW_ROUNDS = FEED_QUEUE_SIZE // OVERFLOW_DOCS + 1


@pytest.mark.parametrize("load", LOADS)
async def test_feed_overflow(scenario, fault_stack: FaultStack, load: str):
    """The worker holding the table is frozen while more changes than its feed's queue
    holds are written; RethinkDB drops some and says so; the worker starts a new epoch."""
    s: Scenario = scenario("feed-overflow", load)
    frozen: list = []

    async def overflow() -> None:
        holder = fault_stack.holder_of(s.stream)
        frozen.append(holder)
        holder.signal(signal.SIGSTOP)
        await asyncio.to_thread(wait_stopped, holder.process.pid)
        try:
            db, table, w = s.database, s.table, s.writer.n + 0.5
            ids = [f"o{i}" for i in range(OVERFLOW_DOCS)]
            docs = [{"id": key, "w": w, "g": i % 3} for i, key in enumerate(ids)]
            await s.tables._run(lambda r: r.db(db).table(table).insert(docs), 20)
            for round_ in range(1, OVERFLOW_ROUNDS + 1):
                await s.tables._run(
                    lambda r, n=round_: r.db(db).table(table).get_all(*ids).update({"n": n}), 20
                )
        finally:
            holder.signal(signal.SIGCONT)

    await s.run(
        f"feed overflow: {OVERFLOW_DOCS * (OVERFLOW_ROUNDS + 1)} changes while the worker is frozen",
        overflow,
    )
    s.assert_ok()
    restarted = re.escape(s.stream) + r": .*restarting the feed"
    assert any(re.search(restarted, line) for line in frozen[0].lines), "the feed never overflowed"
