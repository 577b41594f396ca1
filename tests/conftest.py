"""Shared fixtures: a RethinkDB to talk to (the ReQL test server, or a real one).

Which RethinkDB the integration tests use:

- by default, the in-memory ReQL test server (one per session);
- ``CHANGEFLOW_TEST_RETHINKDB_BIN=/path/to/rethinkdb``: a real server the tests
  start themselves (free ports, a temporary data directory, stopped at the end);
- ``CHANGEFLOW_TEST_RETHINKDB=rethinkdb://host:port``: a real server someone
  else runs (it wins over the binary for the session's RethinkDB).

Fault tests use ``faulty_rethinkdb``: a RethinkDB of the test's own that the test
may stop, restart, freeze or cut off (``FaultyRethinkDB``): a ReQL test server,
or a real process of the binary (SIGKILL, SIGSTOP...). With only a URL they are
skipped: nobody kills someone else's server. Tests of a feature of the test
server itself are marked ``only_on_test_server(reason)``.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rethinkdb import RethinkDB

from changeflow_channels.rethinkdb_url import RethinkDBAddress, parse_rethinkdb_url
from changeflow_channels.testing import ReqlServer, ThreadedReqlServer
from changeflow_channels.testing.faulty import FaultyRethinkDB
from changeflow_channels.testing.processes import ManagedProcess, RedisServer, RethinkDBServer

REAL_RETHINKDB = os.environ.get("CHANGEFLOW_TEST_RETHINKDB")
RETHINKDB_BIN = os.environ.get("CHANGEFLOW_TEST_RETHINKDB_BIN")
USING_REAL_RETHINKDB = bool(REAL_RETHINKDB or RETHINKDB_BIN)
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


def only_on_test_server(reason: str) -> pytest.MarkDecorator:
    """Skip on a real RethinkDB: the test exercises a feature of the ReQL test server."""
    return pytest.mark.skipif(
        USING_REAL_RETHINKDB, reason=f"a feature of the ReQL test server only: {reason}"
    )


@pytest.fixture(scope="session")
def rethinkdb_target() -> Iterator[RethinkDBTarget]:
    """The session's RethinkDB: a real one if configured, else a ReQL test server."""
    if REAL_RETHINKDB:
        yield RethinkDBTarget(parse_rethinkdb_url(REAL_RETHINKDB), None)
    elif RETHINKDB_BIN:
        with RethinkDBServer.running(RETHINKDB_BIN) as real:
            yield RethinkDBTarget(parse_rethinkdb_url(real.url), None)
            save_output("rethinkdb", real.process)
    else:
        with ReqlServer.in_thread(port=0) as server:
            yield RethinkDBTarget(parse_rethinkdb_url(server.url), server)


@pytest.fixture
def faulty_rethinkdb(request: pytest.FixtureRequest) -> Iterator[FaultyRethinkDB]:
    """A RethinkDB of the test's own, for fault injection: a real process of
    CHANGEFLOW_TEST_RETHINKDB_BIN, else a ReQL test server (skipped with only
    CHANGEFLOW_TEST_RETHINKDB: we cannot break someone else's server)."""
    if RETHINKDB_BIN:
        with RethinkDBServer.running(RETHINKDB_BIN) as real:
            try:
                yield real
            finally:
                if real.process is not None:
                    save_output(f"rethinkdb-{request.node.name}", real.process)
                # A crash resets connections: the asyncio driver's reader task then ends
                # with an exception nobody retrieves. Finalize such tasks here, not at a
                # random later point (inside ast.parse, CPython 3.11 raises SystemError).
                gc.collect()
        return
    if REAL_RETHINKDB:
        pytest.skip("fault injection needs a server of our own (CHANGEFLOW_TEST_RETHINKDB_BIN)")
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
