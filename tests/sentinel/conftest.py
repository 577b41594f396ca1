"""Fixtures for the Redis Sentinel tests: a topology of the test's own (a master, one
replica, three Sentinels on loopback), and the environment of worker and Daphne
processes whose channel layer (and leases) name that master through the Sentinels."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from changeflow_channels.testing.sentinel import SentinelTopology

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> Iterator[SentinelTopology]:
    """A master, one replica (or ``replicas``: indirect parametrization) and three Sentinels."""
    options = getattr(request, "param", {})
    with SentinelTopology.running(**options) as topology:
        try:
            yield topology
        finally:
            OUTPUT.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            (OUTPUT / f"sentinel-{name}-redis.log").write_text(topology.output())


def sentinel_env(
    topology: SentinelTopology, rethinkdb_url: str, database: str, **extra: str
) -> dict[str, str]:
    """Environment for worker and Daphne processes (tests/settings.py reads it): the
    channel layer's one host is the Sentinel master, in a namespace of the test's own."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHANGEFLOW_TEST_RETHINKDB_URL": rethinkdb_url,
        "CHANGEFLOW_TEST_REDIS_SENTINEL": json.dumps(topology.host()),
        "CHANGEFLOW_TEST_REDIS_PREFIX": "st" + uuid.uuid4().hex[:8],
        "CHANGEFLOW_TEST_PERMISSIONS": "tests.policies.TestPolicy",
        "CHANGEFLOW_TEST_HANDLERS": "",
        "CHANGEFLOW_TEST_WATCH": f"{database}.*",
        "CHANGEFLOW_TEST_DEBUG_LOGS": "1",  # timestamps: the lease intervals are read from them
        **extra,
    }
