"""A real RethinkDB cluster (three servers and a proxy: ``testing/cluster.py``), for the
tests of this folder; skipped unless CHANGEFLOW_TEST_RETHINKDB_BIN names the binary."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from changeflow_channels.testing.cluster import RethinkDBCluster

from ..conftest import REPO, RETHINKDB_BIN


@pytest.fixture(scope="module")
def cluster() -> Iterator[RethinkDBCluster]:
    if not RETHINKDB_BIN:
        pytest.skip("a RethinkDB cluster needs the real binary (CHANGEFLOW_TEST_RETHINKDB_BIN)")
    with RethinkDBCluster.running(RETHINKDB_BIN) as running:
        try:
            yield running
        finally:
            out = REPO / "test-output"
            out.mkdir(exist_ok=True)
            for name, text in running.output().items():
                (out / f"cluster-{name}.log").write_text(text)
            gc.collect()  # see faulty_rethinkdb in tests/conftest.py


@pytest.fixture
def whole_cluster(cluster: RethinkDBCluster) -> Iterator[RethinkDBCluster]:
    """The module's cluster with every server up before and after the test."""
    cluster.start_servers([name for name, server in cluster.servers.items() if not server.alive()])
    yield cluster
    cluster.start_servers([name for name, server in cluster.servers.items() if not server.alive()])
