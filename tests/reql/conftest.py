"""Fixtures for the ReQL conformance tests: each test runs once per driver loop type."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ..conftest import USING_REAL_RETHINKDB
from ._client import KINDS, Client, RawConnection


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The driver loop type under test: ``sync`` or ``asyncio``."""
    return request.param


@pytest.fixture
async def client(rethinkdb_target: Any, kind: str, dbname: str) -> AsyncIterator[Client]:
    """A driver connection of the test's loop type, default database ``dbname``."""
    connected = await Client.connect(kind, **rethinkdb_target.connect_kwargs(), db=dbname)
    yield connected
    await connected.close()


@pytest.fixture
async def other(rethinkdb_target: Any, kind: str, dbname: str) -> AsyncIterator[Client]:
    """A second connection of the same loop type (a writer beside a feed reader)."""
    connected = await Client.connect(kind, **rethinkdb_target.connect_kwargs(), db=dbname)
    yield connected
    await connected.close()


@pytest.fixture
async def table(client: Client) -> str:
    """A fresh, empty table in ``dbname`` (primary key ``id``)."""
    name = "t_" + uuid.uuid4().hex[:8]
    await client.run(client.r.table_create(name))
    return name


reql_test_server_only = pytest.mark.skipif(
    USING_REAL_RETHINKDB, reason="behaviour specific to the ReQL test server"
)


@pytest.fixture
def raw(rethinkdb_target: Any) -> Iterator[RawConnection]:
    """A bare socket past the real handshake, for hand-made frames."""
    kwargs = rethinkdb_target.connect_kwargs()
    connection = RawConnection(
        kwargs["host"], kwargs["port"], kwargs.get("user", "admin"), kwargs.get("password", "")
    )
    yield connection
    connection.close()
