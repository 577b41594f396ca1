"""Issue 18: a RethinkDB cluster loses the server holding a table's primary replica.

Three real servers and a proxy (``testing/cluster.py``); a worker and Daphne pointed
at the proxy; a table of 3 replicas made by the worker from ``CHANGEFLOW_TABLES``;
three subscribers through Daphne (plain, snapshot, filter); about 200 pushes a
second. The primary's server is SIGKILLed; once the table is back it is restarted
and the new primary's server is killed in turn. Each time: the feed comes back on
the new primary, every subscriber gets its ``resync`` and the data written after
the kill; every accepted push is in the table once; no change is skipped without a
resync. Figures go to ``test-output/recovery/<test>.json`` (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from changeflow_channels.testing.cluster import RethinkDBCluster

from ..bridge.recovery_helpers import Docs, SteadyWriter, Subscription, ViewClient, view_diff
from ..bridge.test_recovery import METRICS, TABLE, Harness
from ..conftest import REPO
from .direct_writer import DirectWriter

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

# About 200 writes a second: pushes, and an application writing with the driver. The
# worker's pushes alone do not keep up with 200 a second of this mix on this cluster
# (one machine, 2 cores, 3 servers): its backlog never drains (see docs/deployment.md).
PUSH_RATE = 50.0
DIRECT_RATE = 150.0
# Documents written by the first pushes stay out of the filter until updated.
FILTER = {"w": {"gt": 50}}
# Generous: the goal is seconds (measured), the bug was "never, until the server is back".
RECOVERY_TIMEOUT = 25.0


def cluster_env(cluster_url: str, redis_url: str, database: str, **extra: str) -> dict[str, str]:
    """The environment of a worker and Daphne on the cluster (tests/settings.py reads it)."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHANGEFLOW_TEST_RETHINKDB_URL": cluster_url,
        "CHANGEFLOW_TEST_REDIS_URL": redis_url,
        "CHANGEFLOW_TEST_HANDLERS": "",
        "CHANGEFLOW_TEST_PERMISSIONS": "tests.policies.TestPolicy",
        "CHANGEFLOW_TEST_REDIS_PREFIX": "cl" + uuid.uuid4().hex[:8],
        "CHANGEFLOW_TEST_WATCH": f"{database}.*",
        "CHANGEFLOW_TEST_TABLES": json.dumps({f"{database}.{TABLE}": {"replicas": 3}}),
        # 200 pushes a second: the answers of a round held up by the failover come
        # in a burst (the suite's 100 would drop some); snapshots of the whole table.
        "CHANGEFLOW_TEST_CAPACITY": "5000",
        "CHANGEFLOW_TEST_SNAPSHOT_LIMIT": "100000",
        **extra,
    }


def matches(doc: dict[str, Any]) -> bool:
    return doc.get("w", -1) > FILTER["w"]["gt"]


class ClusterHarness(Harness):
    """``Harness`` on a cluster: the worker creates the table (3 replicas), one more
    client subscribes with a filter, and the end state is checked per client (the
    filtered one against the filtered table), duplicates counted."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        database: str,
        cluster: RethinkDBCluster,
        redis_url: str,
    ) -> None:
        super().__init__(name, env, database, cluster.connect_kwargs(), redis_url)
        self.cluster = cluster
        self.writer = SteadyWriter(self.layer, database, TABLE, rate=PUSH_RATE)
        self.direct = DirectWriter(cluster.connect_kwargs(), database, TABLE, DIRECT_RATE)
        self.filtered: ViewClient | None = None
        self.crashed_before = len(cluster.crashes)

    async def start(self) -> None:
        await asyncio.to_thread(self.stack.start)
        await self.tables.read(self.database, TABLE)  # made by the worker
        self.metrics["replicas"] = self.cluster.replica_count(self.database, TABLE)
        # The faults hit a table replicated on every server, as the test means them.
        await asyncio.to_thread(self.cluster.wait_all_replicas_ready, self.database, TABLE)

    async def filtered_client(self, name: str) -> ViewClient:
        client = ViewClient(self.stack.url, self.stack.origin, name, self.reload)
        self.clients.append(client)
        self.filtered = client
        await client.connect()
        await client.subscribe(self.stream, snapshot=True, filter=FILTER)
        return client

    def expected(self, client: ViewClient, table: Docs) -> Docs:
        if client is self.filtered:
            return {key: doc for key, doc in table.items() if matches(doc)}
        return table

    async def kill_primary(self) -> str:
        """SIGKILL the server of the table's primary replica; recovery measured."""
        primary = await asyncio.to_thread(self.cluster.wait_primary, self.database, TABLE)
        fault = self.fault(f"primary's server {primary} SIGKILLed")
        await asyncio.to_thread(self.cluster.kill, primary)
        fault.back_at = self.now
        await self.recovered(fault, timeout=RECOVERY_TIMEOUT)
        self.faults[-1]["new_primary"] = await asyncio.to_thread(
            self.cluster.wait_primary, self.database, TABLE
        )
        return primary

    async def bring_back(self, name: str) -> None:
        started = self.now
        await asyncio.to_thread(self.cluster.start_server, name)
        await asyncio.to_thread(self.cluster.wait_all_replicas_ready, self.database, TABLE)
        self.faults[-1]["server_back_all_replicas_ready_s"] = round(self.now - started, 3)

    async def start_writers(self) -> None:
        await self.writer.start()
        await self.direct.start()

    async def finish(self, settle_timeout: float = 15.0) -> Docs:  # type: ignore[override]
        await self.direct.stop()
        # A push held up by a failover is answered late, not never: wait for every answer.
        await self.writer.stop(drain_timeout=30.0, quiet=10.0)
        self.metrics["direct_writes"] = {"written": self.direct.n, "retried": self.direct.retried}
        self.metrics["rethinkdb_crashes"] = [
            (c.name, c.returncode) for c in self.cluster.crashes[self.crashed_before :]
        ]
        table = await self.tables.read(self.database, TABLE)
        deadline = self.now + settle_timeout
        for client in self.clients:
            sub, want = self.sub(client), self.expected(client, table)

            def arrived(sub: Subscription = sub, want: Docs = want) -> bool:
                return sub.view == want

            await client.wait_until(arrived, max(0.1, deadline - self.now))
        self._record(table)
        for client in self.clients:  # the filtered view against the filtered table
            seen = self.metrics["clients"][client.name]
            seen["view_equals_table"] = self.sub(client).view == self.expected(client, table)
        return table

    def duplicates(self, client: ViewClient) -> int:
        """Documents announced as new (``add``) more than once: an insert written twice."""
        adds = Counter(
            frame["new_val"]["id"]
            for _, frame in self.sub(client).changes
            if frame.get("type") == "add"
        )
        return sum(count - 1 for count in adds.values() if count > 1)

    def check(self, table: Docs) -> None:  # type: ignore[override]
        problems = [f"writer: {p}" for p in self.writer.missing_from(table)[:10]]
        problems += [
            f"direct write {key} not in the table" for key in self.direct.missing_from(table)[:10]
        ]
        stats = self.writer.stats()
        if stats["refused"] or stats["unanswered"] or stats["send_failed"]:
            problems.append(f"writer: pushes not accepted: {stats}")
        for client in self.clients:
            sub = self.sub(client)
            want = self.expected(client, table)
            if sub.view != want:
                problems.append(f"{client.name}: view != table {view_diff(sub.view, want)}")
            if sub.violations or sub.changes_before_snapshot:
                problems.append(f"{client.name}: {sub.summary()}")
            if self.duplicates(client):
                problems.append(f"{client.name}: {self.duplicates(client)} duplicate add(s)")
        for fault in self.faults:
            for name, seen in fault["clients"].items():
                if seen["recovery_s"] is None or seen["first_resync_after_s"] is None:
                    problems.append(f"{fault['fault']}: {name} not recovered: {seen}")
        assert not problems, (
            f"see test-output/{self.name}-*.log, test-output/cluster-*.log and "
            f"test-output/recovery/{self.name}.json\n" + "\n".join(problems)
        )


@contextlib.asynccontextmanager
async def running_harness(
    request: Any, whole_cluster: RethinkDBCluster, redis_url: str, url: str
) -> AsyncIterator[ClusterHarness]:
    """A harness on a database of its own, its worker and Daphne given ``url`` (the
    proxy, or a list of servers); stopped and the database dropped after."""
    database = "cl_" + uuid.uuid4().hex[:10]
    env = cluster_env(url, redis_url, database)
    h = ClusterHarness("cluster-" + request.node.name, env, database, whole_cluster, redis_url)
    try:
        yield h
    finally:
        await h.direct.stop()
        await h.close()
        await h.tables._run(lambda r: r.db_drop(database), 15)


@pytest.fixture
async def cluster_harness(
    request, whole_cluster: RethinkDBCluster, redis_url: str
) -> AsyncIterator[ClusterHarness]:
    async with running_harness(request, whole_cluster, redis_url, whole_cluster.url) as h:
        yield h


async def test_feeds_recover_when_the_primary_replicas_server_dies(cluster_harness):
    h = cluster_harness
    await h.start()
    assert h.metrics["replicas"] == 3
    await h.client("plain", snapshot=False)
    await h.client("snapshot", snapshot=True)
    await h.filtered_client("filter")
    await h.start_writers()
    await h.flowing(count=25)
    first = await h.kill_primary()
    await h.bring_back(first)
    # Back, the server takes its configured primary role again: kill another one,
    # the primary elected during the first outage, made the configured one.
    elected = h.faults[-1]["new_primary"]
    await asyncio.to_thread(h.cluster.move_primary, h.database, TABLE, elected)
    await h.flowing(count=25)
    second = await h.kill_primary()
    assert second != first
    await h.bring_back(second)
    table = await h.finish()
    h.metrics["duplicates"] = {c.name: h.duplicates(c) for c in h.clients}
    METRICS.mkdir(parents=True, exist_ok=True)
    (METRICS / f"{h.name}.json").write_text(json.dumps(h.metrics, indent=2, default=str))
    logger.info("cluster recovery: %s", json.dumps(h.faults, default=str))
    h.check(table)
