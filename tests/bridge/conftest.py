"""Fixtures for end-to-end tests: Redis, the worker and Daphne as real processes.

The test process talks to them only as a user would: the channel layer
(channels_redis on the test's Redis), the official RethinkDB driver, and a real
websocket client.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from channels_redis.core import RedisChannelLayer
from rethinkdb import RethinkDB

from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
)

from ..conftest import save_output
from .helpers import WsClient

REPO = Path(__file__).resolve().parents[2]
ALL_HOOKS = ",".join(
    [
        "tests.hooks.raising_hook",
        "tests.hooks.hanging_hook",
        "tests.hooks.hanging_async_hook",
        "tests.hooks.sync_hook",
        "tests.hooks.async_hook",
    ]
)


@pytest.fixture(scope="session")
def process_env(rethinkdb_target, redis_url) -> dict[str, str]:
    """Environment for worker and Daphne processes (tests/settings.py reads it)."""
    return {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        # Ahead of what the test run has (make test-channels-redis-oldest puts an
        # older channels_redis there): the worker and Daphne run the same code.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHANGEFLOW_TEST_RETHINKDB_URL": rethinkdb_target.url,
        "CHANGEFLOW_TEST_REDIS_URL": redis_url,
        "CHANGEFLOW_TEST_HANDLERS": ALL_HOOKS,
        "CHANGEFLOW_TEST_PERMISSIONS": "tests.policies.TestPolicy",
    }


def start_ready_worker(
    env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None
) -> ManagedProcess:
    worker = start_worker(*args, env={**env, **(extra_env or {})}, cwd=str(REPO))
    worker.wait_for(WORKER_READY, timeout=60)
    return worker


@pytest.fixture(scope="session")
def worker_factory(process_env) -> Iterator[Callable[..., ManagedProcess]]:
    """Start extra workers (stopped at the end of the session)."""
    started: list[ManagedProcess] = []

    def start(*args: str, **extra_env: str) -> ManagedProcess:
        worker = start_ready_worker(process_env, *args, extra_env=extra_env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(process_env) -> Iterator[ManagedProcess]:
    """The suite's worker: watches every table, runs every test hook."""
    process = start_ready_worker(process_env)
    yield process
    process.stop()
    save_output("worker", process)


@contextlib.contextmanager
def running_daphne(env: dict[str, str], name: str) -> Iterator[int]:
    """Daphne serving tests/asgi.py on a free port (yielded), its output saved as ``name``."""
    port = free_port()
    process = start_daphne("tests.asgi:application", port, env=env, cwd=str(REPO))
    process.wait_for(DAPHNE_READY, timeout=60)
    yield port
    process.stop()
    save_output(name, process)


@pytest.fixture(scope="session")
def daphne(process_env) -> Iterator[str]:
    """Daphne serving tests/asgi.py; yields the websocket URL of the changeflow endpoint."""
    with running_daphne(process_env, "daphne") as port:
        yield f"ws://127.0.0.1:{port}/ws/changeflow/"


@pytest.fixture
async def layer(redis_url) -> AsyncIterator[RedisChannelLayer]:
    """A channel layer client of the test's own, on the suite's Redis."""
    channel_layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": None}])
    yield channel_layer
    await channel_layer.close_pools()


@pytest.fixture
def stream_db(rethinkdb_target) -> Iterator[str]:
    """A database name of the test's own (created by the pushes themselves), dropped
    afterwards: a real server's every table costs the suite's worker a feed."""
    name = "e2e_" + uuid.uuid4().hex[:10]
    yield name
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        if name in r.db_list().run(conn):
            r.db_drop(name).run(conn)


@pytest.fixture
async def ws_connect(daphne) -> AsyncIterator[Callable[[], Any]]:
    """Open websocket clients to Daphne; all are closed after the test."""
    opened = []

    async def connect() -> WsClient:
        # Browsers send an Origin header; AllowedHostsOriginValidator requires one.
        origin = daphne.replace("ws://", "http://").split("/ws/")[0]
        connection = await websockets.connect(daphne, open_timeout=10, origin=origin)
        opened.append(connection)
        return WsClient(connection)

    yield connect
    for connection in opened:
        await connection.close()
