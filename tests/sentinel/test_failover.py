"""Redis Sentinel (issue 18): the master is SIGKILLed under load, a replica is promoted.

A topology of the test's own (a master, one replica, three Sentinels on loopback, a
master deemed down after 1 s), two workers and a Daphne whose channel layer names the
master through the Sentinels; the first worker keeps its leases in the layer's Redis,
the second is given the same master as ``CHANGEFLOW_REDIS`` (a Sentinel host). Four
tasks push through Daphne with the Python client (idempotency keys, tried again until
accepted); two websocket clients keep a view of both tables (one with snapshots, one
reloading on resync). Then the master is killed. What must hold:

- workers and Daphne keep running; the clients' subscriptions keep getting changes
  (their groups rejoined on the new master);
- no change is skipped or repeated without a ``resync``, and every view ends equal
  to its table;
- every accepted push is in its table exactly once, read back with the driver (and no
  push at all is there twice);
- no table's lease is held by two workers at once (their timestamped logs).

Twice: once with the replica in sync (nothing lost but what the dead master was
doing); once with two replicas, both cut off for ``CUT_FOR`` seconds of load before the
kill (the failover loses that second of Redis writes: messages to consumers, pushes
taken, answers, leases taken and renewed), as when replicas lag behind, and with
``CHANGEFLOW_LEASE_REPLICAS = 1`` (a lease counts once a replica acknowledged it; two
replicas, so that one is left to acknowledge after the failover).

Measured (test-output/sentinel/failover*.json, and logged): the failover itself (the
kill to every Sentinel naming the replica), the first accepted push sent after the
kill, and each subscription's first data written after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
)
from changeflow_channels.testing.sentinel import SentinelTopology

from ..bridge.recovery_helpers import Docs, Subscription, Tables, ViewClient, view_diff
from ..conftest import save_output
from ..polling import poll_until
from .conftest import OUTPUT, REPO, sentinel_env
from .helpers import Holding, Pushers, holdings, overlaps

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
TABLES = ["a", "b"]
RESULTS = OUTPUT / "sentinel"
# Seconds of load the master takes with its replica cut off, lost in the failover: below a
# third of the lease time (5 s here), which the fencing of the leases allows for.
CUT_FOR = 1.0


class Processes:
    """Two workers and a Daphne (blocking methods)."""

    def __init__(self, env: dict[str, str], leases_env: dict[str, str], name: str) -> None:
        self.name = name
        self.port = free_port()
        self.workers = [
            start_worker(env=env, cwd=str(REPO)),
            start_worker(env=leases_env, cwd=str(REPO)),
        ]
        self.daphne = start_daphne("tests.asgi:application", self.port, env=env, cwd=str(REPO))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/changeflow/"

    def ready(self) -> None:
        for worker in self.workers:
            worker.wait_for(WORKER_READY, timeout=60)
        self.daphne.wait_for(DAPHNE_READY, timeout=60)

    @property
    def every(self) -> list[ManagedProcess]:
        return [*self.workers, self.daphne]

    def stop(self) -> None:
        for n, worker in enumerate(self.workers, 1):
            worker.stop()
            save_output(f"{self.name}-worker{n}", worker)
        self.daphne.stop()
        save_output(f"{self.name}-daphne", self.daphne)


@pytest.fixture
async def stack(request, topology, rethinkdb_target, conn, dbname) -> AsyncIterator[Processes]:
    r = RethinkDB()
    for table in TABLES:  # before the workers start: their feeds open at seq 0
        r.table_create(table).run(conn)
    lease_replicas = str(request.node.callspec.params.get("lease_replicas", 0))
    env = sentinel_env(
        topology, rethinkdb_target.url, dbname, CHANGEFLOW_TEST_LEASE_REPLICAS=lease_replicas
    )
    leases_env = {**env, "CHANGEFLOW_TEST_CHANGEFLOW_REDIS": json.dumps(topology.host())}
    name = "sentinel-" + request.node.callspec.id
    processes = await asyncio.to_thread(Processes, env, leases_env, name)
    try:
        await asyncio.to_thread(processes.ready)
        yield processes
    finally:
        await asyncio.to_thread(processes.stop)


def first_data_after(sub: Subscription, at: float, n: int) -> float | None:
    """Seconds from ``at`` to the first frame bringing a document of push > ``n``."""
    arrivals = [t for t, f in sub.changes if t >= at and (f.get("new_val") or {}).get("n", 0) > n]
    arrivals += [
        t for t, f in sub.snapshots if t >= at and any(d.get("n", 0) > n for d in f["documents"])
    ]
    return min(arrivals) - at if arrivals else None


@pytest.mark.parametrize(
    ("topology", "lost_window", "lease_replicas"),
    [({}, 0.0, 0), ({"replicas": 2}, CUT_FOR, 1)],
    ids=["replicated", "writes_lost"],
    indirect=["topology"],
)
async def test_master_killed_under_load(
    topology: SentinelTopology, stack, rethinkdb_target, dbname, lost_window, lease_replicas
):
    loop = asyncio.get_running_loop()
    tables = Tables(rethinkdb_target.connect_kwargs())
    streams = [f"{dbname}.{table}" for table in TABLES]

    async def reload(stream: str) -> Docs:
        return await tables.read(dbname, stream.split(".", 1)[1])

    clients = []
    for name, snapshot in (("snapshot", True), ("plain", False)):
        client = ViewClient(stack.url, f"http://127.0.0.1:{stack.port}", name, reload)
        await client.connect()
        for stream in streams:
            await client.subscribe(stream, snapshot=snapshot)
        clients.append(client)
    subs = [(c, c.subscriptions[s]) for c in clients for s in streams]
    pushers = Pushers(stack.url, streams)
    figures: dict[str, Any] = {
        "sentinel": topology.settings.__dict__,
        "replicas": len(topology.servers) - 1,
        "lease_replicas": lease_replicas,
        "lost_window_s": lost_window,
    }
    try:
        await pushers.start()
        await pushers.wait(lambda: pushers.accepted >= 40, 20)
        for client, sub in subs:
            assert await client.wait_until(lambda sub=sub: bool(sub.changes), 10), sub.summary()

        async def holding_now() -> list[Holding]:
            return [
                h
                for n, w in enumerate(stack.workers)
                for h in holdings(n, w.output)
                if h.end is None
            ]

        # The fault hits two workers holding a table each (no table moving for balance).
        await poll_until(
            holding_now,
            lambda held: (
                sorted(h.stream for h in held) == streams and len({h.worker for h in held}) == 2
            ),
            20,
            lambda held: f"leases not settled: {held}",
        )

        if lost_window:  # what the master takes from now on is lost in the failover
            await asyncio.to_thread(topology.cut_replicas)
            accepted_at_cut = pushers.accepted
            await asyncio.sleep(lost_window)  # the load goes on into the lost window
            figures["accepted_in_lost_window"] = pushers.accepted - accepted_at_cut
        killed_at, n_at_kill = loop.time(), pushers.sent
        await asyncio.to_thread(topology.kill_master)
        if lost_window:
            await asyncio.to_thread(topology.heal_replicas)
        await asyncio.to_thread(topology.wait_failover)
        figures["failover_s"] = round(loop.time() - killed_at, 3)
        await pushers.wait(lambda: pushers.first_accepted_after(killed_at) is not None, 30)
        figures["pushes_accepted_again_s"] = round(pushers.first_accepted_after(killed_at), 3)
        figures["subscriptions"] = {}
        for client, sub in subs:
            await client.wait_until(
                lambda sub=sub: first_data_after(sub, killed_at, n_at_kill) is not None, 30
            )
            delay = first_data_after(sub, killed_at, n_at_kill)
            figures["subscriptions"][f"{client.name} {sub.stream}"] = {
                "recovery_s": None if delay is None else round(delay, 3),
                "resyncs": [reason for at, reason in sub.resyncs if at >= killed_at],
            }
        recovered = pushers.accepted
        await pushers.wait(lambda: pushers.accepted >= recovered + 40, 20)  # more load
        await pushers.stop()

        # Every view reaches its table, read back with the driver.
        final: dict[str, Docs] = {}
        for stream in streams:
            final[stream] = await reload(stream)
        for client, sub in subs:
            await client.wait_until(lambda sub=sub: sub.view == final[sub.stream], 15)
        problems = []
        for client, sub in subs:
            if sub.view != final[sub.stream]:
                diff = view_diff(sub.view, final[sub.stream])
                problems.append(f"{client.name} {sub.stream}: view != table {diff}")
            if sub.violations or sub.changes_before_snapshot:
                problems.append(f"{client.name} {sub.stream}: {sub.summary()}")

        # Accepted pushes: written exactly once; no push twice.
        written = Counter(doc["n"] for docs in final.values() for doc in docs.values())
        accepted = [r for r in pushers.records.values() if r.accepted_at is not None]
        lost = [r.n for r in accepted if written[r.n] == 0]
        twice = sorted(n for n, count in written.items() if count > 1)
        refused = {r.n: r.refused for r in pushers.records.values() if r.refused}
        figures.update(
            pushes_sent=pushers.sent,
            pushes_accepted=len(accepted),
            push_errors_tried_again=dict(pushers.errors),
            lost=len(lost),
            duplicates=len(twice),
            resyncs=sum(len(v["resyncs"]) for v in figures["subscriptions"].values()),
        )
        problems += [f"accepted, not written: {lost[:10]}"] if lost else []
        problems += [f"written twice: {twice[:10]}"] if twice else []
        problems += [f"refused: {refused}"] if refused else []

        # Everything still runs; no lease held twice at once.
        for process in stack.every:
            if process.process.poll() is not None:
                problems.append(f"{process.args} exited: {process.output[-2000:]}")
        held = [h for n, w in enumerate(stack.workers) for h in holdings(n, w.output)]
        figures["lease_overlaps"] = overlaps(held)
        problems += figures["lease_overlaps"]
        assert {h.stream for h in held} == set(streams), held
    finally:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = "failover-writes-lost" if lost_window else "failover"
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str))
        logger.info("sentinel failover: %s", json.dumps(figures, default=str))
        if not pushers._stopping:
            pushers._stopping = True
            for task in pushers._running:
                task.cancel()
        for client in clients:
            await client.close()
    assert not problems, "\n".join(problems) + f"\nfigures: {figures}"
