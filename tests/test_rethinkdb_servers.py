"""Several RethinkDB servers in CHANGEFLOW_RETHINKDB: the URL's list, and ``connect``
going to a server that answers (issue 18)."""

from __future__ import annotations

import pytest

from changeflow_channels import rethink
from changeflow_channels.rethink import connect, new_driver
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.testing.processes import free_port


def test_a_list_of_hosts_parses_into_servers_in_order():
    address = parse_rethinkdb_url("rethinkdbs://me:s%40cret@db1:29015,db2,[::1]:29016/app")
    assert address.servers == (("db1", 29015), ("db2", 28015), ("::1", 29016))
    assert (address.host, address.port, address.user, address.password) == (
        "db1",
        29015,
        "me",
        "s@cret",
    )
    assert (address.db, address.tls) == ("app", True)
    assert address.where == "db1:29015,db2:28015,::1:29016"
    assert address.connect_kwargs(("db2", 28015))["host"] == "db2"
    assert address.connect_kwargs(("db2", 28015))["password"] == "s@cret"


def test_one_host_is_as_before():
    address = parse_rethinkdb_url("rethinkdb://localhost")
    assert address.servers == (("localhost", 28015),)
    assert address.where == "localhost:28015"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("rethinkdb://db1,,db2", "an empty host in the list"),
        ("rethinkdb://db1,", "an empty host in the list"),
        ("rethinkdb://db1,db2:x", "invalid port"),
        ("rethinkdb://", "names no host"),
    ],
)
def test_a_bad_list_is_refused(url, error):
    with pytest.raises(ValueError, match=error):
        parse_rethinkdb_url(url)


async def test_connect_goes_to_a_server_that_answers_and_stays_there(rethinkdb_target):
    live = rethinkdb_target.address
    dead = ("127.0.0.1", free_port())  # nobody listens: refused at once
    address = parse_rethinkdb_url(
        f"rethinkdb://{live.user}@{dead[0]}:{dead[1]},{live.host}:{live.port}"
    )
    r = new_driver()
    conn = await connect(r, address)
    try:
        assert await r.expr(1).run(conn) == 1
        assert (conn.host, conn.port) == (live.host, live.port)
    finally:
        await conn.close(noreply_wait=False)
    # The next connection tries the server that answered first.
    assert rethink._answered[address] == 1


async def test_connect_fails_when_no_server_answers():
    address = parse_rethinkdb_url(f"rethinkdb://127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    with pytest.raises(rethink.ReqlDriverError):
        await connect(new_driver(), address)
