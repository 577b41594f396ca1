"""Shared fixtures: a RethinkDB to talk to (the ReQL test server, or a real one).

Set ``CHANGEFLOW_TEST_RETHINKDB=rethinkdb://host:port`` to run every
integration test against a real RethinkDB instead of the in-memory server.
Tests that need fault injection (restarting the server, dropping connections)
use ``reql_server`` and are skipped against a real server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.rethinkdb_url import RethinkDBAddress, parse_rethinkdb_url
from changeflow_channels.testing import ReqlServer, ThreadedReqlServer
from changeflow_channels.testing.processes import ManagedProcess, RedisServer

REAL_RETHINKDB = os.environ.get("CHANGEFLOW_TEST_RETHINKDB")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class RethinkDBTarget:
    """Where the tests' RethinkDB is; ``reql`` is the test server, None for a real one."""

    address: RethinkDBAddress
    reql: ThreadedReqlServer | None

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def url(self) -> str:
        auth = self.address.user + (f":{self.address.password}" if self.address.password else "")
        return f"rethinkdb://{auth}@{self.host}:{self.port}"

    def connect_kwargs(self) -> dict:
        return self.address.connect_kwargs()


@pytest.fixture(scope="session")
def rethinkdb_target() -> Iterator[RethinkDBTarget]:
    """The session's RethinkDB: a real one if configured, else a ReQL test server."""
    if REAL_RETHINKDB:
        yield RethinkDBTarget(parse_rethinkdb_url(REAL_RETHINKDB), None)
        return
    with ReqlServer.in_thread(port=0) as server:
        yield RethinkDBTarget(parse_rethinkdb_url(server.url), server)


@pytest.fixture
def reql_server() -> Iterator[ThreadedReqlServer]:
    """A fresh ReQL test server of the test's own, for fault injection."""
    if REAL_RETHINKDB:
        pytest.skip("fault injection needs the ReQL test server")
    with ReqlServer.in_thread(port=0) as server:
        yield server


@pytest.fixture
def r() -> RethinkDB:
    """A private driver instance (the default, sync loop type)."""
    return RethinkDB()


@pytest.fixture
def ar() -> RethinkDB:
    """A private driver instance with the asyncio loop type."""
    instance = RethinkDB()
    instance.set_loop_type("asyncio")
    return instance


@pytest.fixture
def dbname(rethinkdb_target: RethinkDBTarget, r: RethinkDB) -> Iterator[str]:
    """A database of the test's own, dropped afterwards."""
    name = "t_" + uuid.uuid4().hex[:12]
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db_create(name).run(conn)
    yield name
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        if name in r.db_list().run(conn):
            r.db_drop(name).run(conn)


@pytest.fixture
def conn(rethinkdb_target: RethinkDBTarget, r: RethinkDB, dbname: str):
    """A sync driver connection whose default database is ``dbname``."""
    connection = r.connect(**rethinkdb_target.connect_kwargs(), db=dbname)
    yield connection
    connection.close(noreply_wait=False)


@pytest.fixture
async def aconn(rethinkdb_target: RethinkDBTarget, ar: RethinkDB, dbname: str) -> AsyncIterator:
    """An asyncio driver connection whose default database is ``dbname``."""
    connection = await ar.connect(**rethinkdb_target.connect_kwargs(), db=dbname)
    yield connection
    await connection.close(noreply_wait=False)


def save_output(name: str, process: ManagedProcess) -> None:
    """Keep a process's output in test-output/ for reading after a failure."""
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    (out / f"{name}.log").write_text(process.output)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis of the suite's own (or CHANGEFLOW_TEST_REDIS)."""
    if os.environ.get("CHANGEFLOW_TEST_REDIS"):
        yield os.environ["CHANGEFLOW_TEST_REDIS"]
        return
    with RedisServer.running() as server:
        yield server.url
