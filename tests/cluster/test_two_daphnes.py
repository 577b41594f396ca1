"""Issue 18, item 4: two Daphnes and three workers over the RethinkDB cluster (through
its proxy) and Redis Sentinel (a master, one replica, three Sentinels).

The workers share the tables by leases in the Sentinel master; the clients are spread
over both Daphnes (plain and filtered on one, with snapshots on the other); pushes go
through each Daphne with the Python client (idempotency keys, tried again until
accepted), and an application inserts with the driver. Then the server of table
``a``'s primary replica is SIGKILLed, and once everything recovered, the Redis master.
What must hold after both: every process still runs, every view equals its table
(the filtered one the filtered table), no change skipped without ``resync``, every
accepted push written exactly once, none refused, no lease held by two workers at once.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from changeflow_channels.testing.cluster import RethinkDBCluster
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
from ..conftest import REPO, save_output
from ..sentinel.conftest import sentinel_env
from ..sentinel.helpers import Pushers, holdings, overlaps
from .direct_writer import DirectWriter

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
TABLES = ["a", "b"]
FILTER = {"n": {"gt": 30}}
RESULTS = REPO / "test-output" / "recovery"
INTERNAL, PUSH_KEYS = "changeflow_internal", "push_keys"


class Processes:
    """Three workers and two Daphnes (blocking methods)."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.name = name
        self.ports = [free_port(), free_port()]
        self.workers = [start_worker(env=env, cwd=str(REPO)) for _ in range(3)]
        self.daphnes = [
            start_daphne("tests.asgi:application", port, env=env, cwd=str(REPO))
            for port in self.ports
        ]

    def url(self, n: int) -> str:
        return f"ws://127.0.0.1:{self.ports[n]}/ws/changeflow/"

    def origin(self, n: int) -> str:
        return f"http://127.0.0.1:{self.ports[n]}"

    def ready(self) -> None:
        for worker in self.workers:
            worker.wait_for(WORKER_READY, timeout=60)
        for daphne in self.daphnes:
            daphne.wait_for(DAPHNE_READY, timeout=60)

    @property
    def every(self) -> list[ManagedProcess]:
        return [*self.workers, *self.daphnes]

    def stop(self) -> None:
        for n, worker in enumerate(self.workers, 1):
            worker.stop()
            save_output(f"{self.name}-worker{n}", worker)
        for n, daphne in enumerate(self.daphnes, 1):
            daphne.stop()
            save_output(f"{self.name}-daphne{n}", daphne)


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelTopology]:
    """A master, one replica and three Sentinels (``testing/sentinel.py``)."""
    with SentinelTopology.running() as topology:
        try:
            yield topology
        finally:
            (REPO / "test-output" / "cluster-two-daphnes-redis.log").write_text(topology.output())


@pytest.fixture
async def stack(
    request, redis_sentinel: SentinelTopology, whole_cluster: RethinkDBCluster
) -> AsyncIterator[tuple[Processes, str]]:
    topology = redis_sentinel
    database = "cl_" + uuid.uuid4().hex[:10]
    env = sentinel_env(
        topology,
        whole_cluster.url,
        database,
        CHANGEFLOW_TEST_TABLES=json.dumps({f"{database}.{t}": {"replicas": 3} for t in TABLES}),
        CHANGEFLOW_TEST_CAPACITY="5000",
        CHANGEFLOW_TEST_SNAPSHOT_LIMIT="100000",
    )
    processes = await asyncio.to_thread(Processes, env, "cluster-" + request.node.name)
    try:
        await asyncio.to_thread(processes.ready)
        yield processes, database
    finally:
        await asyncio.to_thread(processes.stop)
        await Tables(whole_cluster.connect_kwargs())._run(lambda r: r.db_drop(database), 15)


SECOND = 1_000_000  # the second pusher's numbers start above this


def first_data_after(sub: Subscription, at: float, last: tuple[int, int]) -> float | None:
    """Seconds from ``at`` to the first frame bringing a document of a push sent after
    ``last`` (each pusher's last push number then)."""

    def fresh(doc: dict[str, Any] | None) -> bool:
        n = (doc or {}).get("n", 0)
        return last[0] < n < SECOND or n > last[1]

    arrivals = [t for t, f in sub.changes if t >= at and fresh(f.get("new_val"))]
    arrivals += [t for t, f in sub.snapshots if t >= at and any(map(fresh, f["documents"]))]
    return min(arrivals) - at if arrivals else None


def expected(sub: Subscription, table: Docs) -> Docs:
    if sub.filter is None:
        return table
    return {k: d for k, d in table.items() if d.get("n", 0) > FILTER["n"]["gt"]}


async def test_two_daphnes_three_workers_lose_a_rethinkdb_server_then_the_redis_master(
    stack, redis_sentinel: SentinelTopology, whole_cluster: RethinkDBCluster
):
    topology = redis_sentinel
    processes, database = stack
    loop = asyncio.get_running_loop()
    tables = Tables(whole_cluster.connect_kwargs())
    streams = [f"{database}.{table}" for table in TABLES]
    for table in TABLES:  # made by the workers, with 3 replicas
        await tables.read(database, table)
        assert whole_cluster.replica_count(database, table) == 3
        await asyncio.to_thread(whole_cluster.wait_all_replicas_ready, database, table)

    async def reload(stream: str) -> Docs:
        return await tables.read(database, stream.split(".", 1)[1])

    clients: list[ViewClient] = []
    for name, daphne, snapshot, spec in (
        ("plain", 0, False, None),
        ("snapshot", 1, True, None),
        ("filter", 0, True, FILTER),
    ):
        client = ViewClient(processes.url(daphne), processes.origin(daphne), name, reload)
        await client.connect()
        for stream in streams:
            await client.subscribe(stream, snapshot=snapshot, filter=spec)
        clients.append(client)
    subs = [(c, c.subscriptions[s]) for c in clients for s in streams]
    # One pusher per Daphne; their push numbers apart.
    pushers = [
        Pushers(processes.url(0), streams, tasks=2),
        Pushers(processes.url(1), streams, tasks=2, _count=itertools.count(SECOND + 1)),
    ]
    direct = DirectWriter(whole_cluster.connect_kwargs(), database, "b", rate=100.0)
    figures: dict[str, Any] = {"faults": []}
    crashed_before = len(whole_cluster.crashes)

    def accepted() -> int:
        return sum(p.accepted for p in pushers)

    fault_times: list[float] = []

    async def fault(kind: str, inject: Any) -> None:
        at = loop.time()
        fault_times.append(round(at, 3))
        last = (max(pushers[0].records, default=0), max(pushers[1].records, default=SECOND))
        before = accepted()
        await inject()
        entry: dict[str, Any] = {"fault": kind, "subscriptions": {}}
        await pushers[0].wait(lambda: accepted() >= before + 40, 30)
        entry["pushes_accepted_again_s"] = min(
            t for p in pushers if (t := p.first_accepted_after(at)) is not None
        )
        for client, sub in subs:
            await client.wait_until(lambda sub=sub: first_data_after(sub, at, last) is not None, 30)
            delay = first_data_after(sub, at, last)
            entry["subscriptions"][f"{client.name} {sub.stream}"] = {
                "recovery_s": None if delay is None else round(delay, 3),
                "resyncs": len([1 for t, _ in sub.resyncs if t >= at]),
            }
        figures["faults"].append(entry)

    try:
        for p in pushers:
            await p.start()
        await direct.start()
        await pushers[0].wait(lambda: accepted() >= 60, 30)
        for client, sub in subs:
            assert await client.wait_until(lambda sub=sub: bool(sub.changes), 15), sub.summary()
        # The records of pushes with an idempotency key: made by a worker with a replica on
        # each server (with one, losing its server would fail every such push until back).
        assert whole_cluster.replica_count(INTERNAL, PUSH_KEYS) == 3
        await asyncio.to_thread(whole_cluster.wait_all_replicas_ready, INTERNAL, PUSH_KEYS)

        primary = await asyncio.to_thread(whole_cluster.wait_primary, database, "a")

        async def kill_primary() -> None:
            await asyncio.to_thread(whole_cluster.kill, primary)

        await fault(f"RethinkDB server {primary} (primary of a) SIGKILLed", kill_primary)
        await asyncio.to_thread(whole_cluster.start_server, primary)

        async def kill_master() -> None:
            await asyncio.to_thread(topology.kill_master)
            await asyncio.to_thread(topology.wait_failover)

        await fault("Redis master SIGKILLed (Sentinel failover)", kill_master)
        await direct.stop()
        for p in pushers:
            await p.stop()

        final = {stream: await reload(stream) for stream in streams}
        for client, sub in subs:
            want = expected(sub, final[sub.stream])
            await client.wait_until(lambda sub=sub, want=want: sub.view == want, 20)
        problems = []
        for client, sub in subs:
            want = expected(sub, final[sub.stream])
            if sub.view != want:
                problems.append(f"{client.name} {sub.stream}: {view_diff(sub.view, want)}")
                missing = sorted(want[k].get("n", 0) for k in set(want) - set(sub.view))
                records = {r.n: r for p in pushers for r in p.records.values()}
                figures.setdefault("debug", {})[f"{client.name} {sub.stream}"] = {
                    "missing_n": missing[:20],
                    "missing_sent_accepted": [
                        (round(records[n].first_sent, 3), records[n].accepted_at)
                        for n in missing[:20]
                        if n in records
                    ],
                    "resyncs": [(round(t, 3), why) for t, why in sub.resyncs],
                    "reloads": [round(t, 3) for t in sub.reloads],
                    "subscribed": [round(t, 3) for t in sub.subscribed_at],
                    "closes": [round(t, 3) for t in client.unexpected_closes],
                    "faults_at": fault_times,
                    "last_frames": sub.frames[-12:],
                }
            if sub.violations or sub.changes_before_snapshot:
                problems.append(f"{client.name} {sub.stream}: {sub.summary()}")
        written = Counter(d["n"] for docs in final.values() for d in docs.values() if "n" in d)
        accepted_pushes = [r for p in pushers for r in p.records.values() if r.accepted_at]
        lost = [r.n for r in accepted_pushes if written[r.n] == 0]
        twice = sorted(n for n, count in written.items() if count > 1)
        refused = [r.refused for p in pushers for r in p.records.values() if r.refused]
        missing_direct = direct.missing_from(final[f"{database}.b"])
        figures.update(
            pushes_accepted=len(accepted_pushes),
            direct_writes=direct.n,
            lost=len(lost),
            duplicates=len(twice),
            refused=len(refused),
            # Restarted by the cluster's supervisor (see testing/cluster.py).
            rethinkdb_crashes=[
                (c.name, c.returncode) for c in whole_cluster.crashes[crashed_before:]
            ],
        )
        problems += [f"accepted, not written: {lost[:10]}"] if lost else []
        problems += [f"written twice: {twice[:10]}"] if twice else []
        problems += [f"refused: {refused[:5]}"] if refused else []
        problems += [f"direct writes missing: {missing_direct[:10]}"] if missing_direct else []
        for process in processes.every:
            if process.process.poll() is not None:
                problems.append(f"{process.args} exited: {process.output[-2000:]}")
        held = [h for n, w in enumerate(processes.workers) for h in holdings(n, w.output)]
        figures["lease_overlaps"] = overlaps(held)
        problems += figures["lease_overlaps"]
        for entry in figures["faults"]:
            for name, seen in entry["subscriptions"].items():
                if seen["recovery_s"] is None:
                    problems.append(f"{entry['fault']}: {name} not recovered")
        assert not problems, "\n".join(problems) + f"\nfigures: {figures}"
    finally:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "cluster-two-daphnes.json").write_text(
            json.dumps(figures, indent=2, default=str)
        )
        logger.info("two daphnes, three workers: %s", json.dumps(figures, default=str))
        await direct.stop()
        for p in pushers:
            if not p._stopping:
                p._stopping = True
                for task in p._running:
                    task.cancel()
        for client in clients:
            await client.close()
