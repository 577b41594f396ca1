"""Issue 18: the worker given every server of the cluster (no proxy) loses the one it uses.

``CHANGEFLOW_RETHINKDB = "rethinkdb://admin@s1,s2,s3"``: the worker connects to the first
server that answers (s1). The table's primary replica is moved to s2, then s1 is
SIGKILLed: only the worker's connections are lost. Its feeds and pushes go on through
another server; subscribers get their ``resync`` and the data written meanwhile; every
accepted push is in the table once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from changeflow_channels.testing.cluster import RethinkDBCluster
from changeflow_channels.testing.processes import established_connections

from ..bridge.test_recovery import METRICS, TABLE
from .test_primary_loss import ClusterHarness, running_harness

pytestmark = pytest.mark.slow


@pytest.fixture
async def direct_harness(
    request, whole_cluster: RethinkDBCluster, redis_url: str
) -> AsyncIterator[ClusterHarness]:
    async with running_harness(request, whole_cluster, redis_url, whole_cluster.server_urls) as h:
        yield h


async def test_the_worker_fails_over_to_another_server(direct_harness, whole_cluster):
    h = direct_harness
    first, second = whole_cluster.servers["s1"], whole_cluster.servers["s2"]
    await h.start()
    await asyncio.to_thread(whole_cluster.move_primary, h.database, TABLE, "s2")
    await h.client("plain", snapshot=False)
    await h.client("snapshot", snapshot=True)
    await h.start_writers()
    await h.flowing(count=25)
    # The worker uses the first server of its list (its feed and push connections).
    assert established_connections(first.port) > 0
    assert established_connections(second.port) == 0
    fault = h.fault("the worker's server s1 SIGKILLed")
    await asyncio.to_thread(whole_cluster.kill, "s1")
    fault.back_at = h.now
    await h.recovered(fault)
    assert established_connections(second.port) > 0  # on to the next server of the list
    await h.bring_back("s1")
    table = await h.finish()
    h.metrics["duplicates"] = {c.name: h.duplicates(c) for c in h.clients}
    METRICS.mkdir(parents=True, exist_ok=True)
    (METRICS / f"{h.name}.json").write_text(json.dumps(h.metrics, indent=2, default=str))
    h.check(table)
