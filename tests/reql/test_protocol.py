"""The wire protocol as the official driver sees it: handshake, framing, query types."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from rethinkdb import RethinkDB
from rethinkdb.ast import RqlTopLevelQuery
from rethinkdb.errors import ReqlAuthError, ReqlCompileError, ReqlTimeoutError
from rethinkdb.ql2_pb2 import Response

from changeflow_channels.testing import ReqlServer

from ..conftest import RETHINKDB_BIN
from ._client import Client, RawConnection
from .conftest import reql_test_server_only

ResponseType = Response.ResponseType


class _UnknownTerm(RqlTopLevelQuery):
    """A term type no server knows."""

    term_type = 99999
    statement = "unknown_term"


async def test_connect_and_run(client: Client) -> None:
    assert await client.run(client.r.expr([1, "two", {"three": 3.5}])) == [
        1,
        "two",
        {"three": 3.5},
    ]
    assert await client.run(client.r.expr(2) + 3) == 5


async def test_wrong_password_is_an_auth_error(rethinkdb_target: Any, kind: str) -> None:
    kwargs = {**rethinkdb_target.connect_kwargs(), "password": "certainly-not-the-password"}
    with pytest.raises(ReqlAuthError):
        await Client.connect(kind, **kwargs)


async def test_unknown_user_is_an_auth_error(rethinkdb_target: Any, kind: str) -> None:
    kwargs = {**rethinkdb_target.connect_kwargs(), "user": "nobody_of_that_name"}
    with pytest.raises(ReqlAuthError):
        await Client.connect(kind, **kwargs)


PASSWORD = "s3cr=t,pw"


@pytest.fixture
def protected(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """(host, port) of a server whose admin password is ``PASSWORD``: a real one of
    the test's own given it through the driver, or a ReQL test server started with it."""
    if RETHINKDB_BIN:
        server = request.getfixturevalue("faulty_rethinkdb")
        r = RethinkDB()
        with r.connect(host=server.host, port=server.port) as conn:
            r.db("rethinkdb").table("users").get("admin").update({"password": PASSWORD}).run(conn)
        yield server.host, server.port
        return
    with ReqlServer.in_thread(port=0, password=PASSWORD) as test_server:
        yield test_server.host, test_server.port


def test_the_test_servers_url_carries_its_password() -> None:
    with ReqlServer.in_thread(port=0, password=PASSWORD) as server:
        assert server.url == f"rethinkdb://admin:s3cr=t,pw@127.0.0.1:{server.port}"


async def test_password_protected_server(protected: tuple[str, int], kind: str) -> None:
    host, port = protected
    good = await Client.connect(kind, host=host, port=port, password=PASSWORD)
    try:
        assert await good.run(good.r.expr("in")) == "in"
    finally:
        await good.close()
    for password in ("", "wrong"):
        with pytest.raises(ReqlAuthError):
            await Client.connect(kind, host=host, port=port, password=password)


async def test_server_info(client: Client) -> None:
    info = await client.server()
    assert isinstance(info["id"], str) and info["id"]
    assert isinstance(info["name"], str) and info["name"]


async def test_noreply_then_noreply_wait(client: Client, table: str) -> None:
    r = client.r
    for i in range(20):
        assert await client.raw(r.table(table).insert({"id": i}), noreply=True) is None
    await client.noreply_wait()
    assert await client.run(r.table(table).count()) == 20


async def test_many_queries_in_flight_on_one_asyncio_connection(
    rethinkdb_target: Any, dbname: str
) -> None:
    client = await Client.connect("asyncio", **rethinkdb_target.connect_kwargs(), db=dbname)
    r = client.r
    try:
        await client.run(r.table_create("inflight"))
        inserts = [client.run(r.table("inflight").insert({"id": i, "v": i * i})) for i in range(50)]
        results = await asyncio.gather(*inserts)
        assert all(result["inserted"] == 1 for result in results)
        reads = await asyncio.gather(*(client.run(r.table("inflight").get(i)) for i in range(50)))
        assert [doc["v"] for doc in reads] == [i * i for i in range(50)]
        values = await asyncio.gather(*(client.run(r.expr(i) * 2) for i in range(200)))
        assert values == [i * 2 for i in range(200)]
    finally:
        await client.close()


def test_malformed_json_gets_a_client_error_and_the_connection_keeps_serving(
    raw: RawConnection,
) -> None:
    raw.send_frame(7, b'[1, [1, "unclosed')
    token, response = raw.read_response()
    assert token == 7
    assert response["t"] == ResponseType.CLIENT_ERROR
    assert response["r"] == ["Client is buggy (failed to deserialize query)."]
    raw.send_query(8, [1, 42, {}])
    token, response = raw.read_response()
    assert (token, response["t"], response["r"]) == (8, ResponseType.SUCCESS_ATOM, [42])


def test_continue_of_an_unknown_token_is_a_client_error(raw: RawConnection) -> None:
    raw.send_query(31, [2])
    token, response = raw.read_response()
    assert token == 31
    assert response["t"] == ResponseType.CLIENT_ERROR
    assert response["r"] == ["Token 31 not in stream cache."]


def test_stop_answers_the_pending_continue_and_itself(
    raw: RawConnection, rethinkdb_target: Any, dbname: str
) -> None:
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db(dbname).table_create("stopped").run(conn)
    raw.send_query(5, [1, r.db(dbname).table("stopped").changes(), {}])
    token, response = raw.read_response()
    assert (token, response["t"]) == (5, ResponseType.SUCCESS_PARTIAL)
    assert Response.ResponseNote.SEQUENCE_FEED in response.get("n", [])
    raw.send_query(5, [2])  # CONTINUE: waits for a change
    raw.send_query(5, [3])  # STOP: ends it, one answer for each of the two
    answers = [raw.read_response() for _ in range(2)]
    assert [(token, response["t"], response["r"]) for token, response in answers] == [
        (5, ResponseType.SUCCESS_SEQUENCE, [])
    ] * 2
    raw.send_query(6, [1, "next", {}])
    token, response = raw.read_response()
    assert (token, response["t"], response["r"]) == (6, ResponseType.SUCCESS_ATOM, ["next"])


@reql_test_server_only
async def test_unknown_term_is_a_compile_error_naming_it(client: Client) -> None:
    with pytest.raises(ReqlCompileError, match="99999"):
        await client.run(_UnknownTerm())
    assert await client.run(client.r.expr("still serving")) == "still serving"


async def test_client_dropping_mid_feed_leaves_others_alone(
    rethinkdb_target: Any, kind: str, client: Client, table: str
) -> None:
    r = client.r
    leaver = await Client.connect(kind, **rethinkdb_target.connect_kwargs(), db=client.conn.db)
    await leaver.feed(r.table(table).changes())
    stayer = await client.feed(r.table(table).changes())
    await leaver.close()  # gone without STOP, a CONTINUE still pending
    await client.run(r.table(table).insert({"id": "after"}))
    change = await stayer.next()
    assert change == {"new_val": {"id": "after"}, "old_val": None}
    fresh = await Client.connect(kind, **rethinkdb_target.connect_kwargs(), db=client.conn.db)
    try:
        assert await fresh.run(r.table(table).count()) == 1
    finally:
        await fresh.close()
    await stayer.close()


async def test_feed_timeout_leaves_the_feed_usable(
    client: Client, other: Client, table: str
) -> None:
    feed = await client.feed(client.r.table(table).changes())
    with pytest.raises((ReqlTimeoutError, asyncio.TimeoutError)):
        await feed.next(timeout=0.05)
    await other.run(other.r.table(table).insert({"id": 1}))
    assert (await feed.next())["new_val"] == {"id": 1}
    await feed.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    "module", ["changeflow_channels.testing", "changeflow_channels.testing.reql_server"]
)
async def test_cli_prints_its_address_and_stops_on_signal(module: str, signum: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert line.startswith("ReQL test server listening on rethinkdb://admin@127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        cli_client = await Client.connect("asyncio", host="127.0.0.1", port=port)
        assert await cli_client.run(cli_client.r.expr("hello")) == "hello"
        process.send_signal(signum)
        rest, _ = await asyncio.wait_for(process.communicate(), 10)
        assert process.returncode == 0
        assert b"stopped" in rest
        await cli_client.close()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
