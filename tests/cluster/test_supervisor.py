"""RethinkDB 2.4.4 aborts a server or proxy whose reconnect to a lost peer gets a
connection closed before the cluster handshake's header (``testing/cluster.py``); the
cluster's supervisor starts it again, as systemd would, and keeps a record."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

import pytest

from changeflow_channels.testing.cluster import PROXY, RethinkDBCluster

pytestmark = pytest.mark.slow


def accept_and_close(port: int, until: float, done: Callable[[], bool]) -> None:
    """Listen on ``port`` (a killed server's cluster port) and close every connection
    at once, as a server being killed can, until ``done()`` or ``until``."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        while not done() and time.monotonic() < until:
            ready, _, _ = select.select([listener], [], [], 0.1)
            if ready:
                connection, _ = listener.accept()
                connection.close()


def test_a_peer_aborted_by_a_lost_server_is_started_again(whole_cluster: RethinkDBCluster):
    cluster = whole_cluster
    before = len(cluster.crashes)
    cluster.kill("s3")
    accept_and_close(
        cluster.servers["s3"].cluster_port,
        until=time.monotonic() + 30,
        done=lambda: len(cluster.crashes) > before,
    )
    crashed = cluster.crashes[before:]
    assert crashed, "no peer of the lost server aborted"
    assert {c.name for c in crashed} <= {"s1", "s2", PROXY}
    assert all("Guarantee failed" in c.last_lines for c in crashed), crashed
    # Every peer back: s3 started again, and the proxy sees all three connected.
    cluster.start_server("s3")
    cluster.wait_servers(3)
    assert all(server.alive() for server in cluster.servers.values())
    assert cluster.proxy is not None and cluster.proxy.process.poll() is None
