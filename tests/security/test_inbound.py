"""Issue 15, item 7: inbound frames the server will not take are answered, or closed with
the code RFC 6455 gives, never dropped with the TCP connection (docs/protocol.md, "Frame
sizes"; docs/security.md, "Limits").

Against the site's real Daphne, run as the README runs it (``changeflow_channels.serve``),
with raw websocket clients: a frame over CHANGEFLOW_MAX_FRAME_BYTES (64 KiB) up to
Daphne's limit (1 MiB) gets ``too_large`` and the connection stays usable; a larger one
is closed with 1009, a text frame that is not UTF-8 with 1007, each with a close frame
(plain Daphne drops the TCP connection: the client saw 1006)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest
import websockets
from django.test import override_settings

from changeflow_channels.checks import check_settings
from changeflow_channels.conf import get_settings
from changeflow_channels.frame_limits import DAPHNE_DEFAULT_MAX_SIZE, limit_problems
from changeflow_channels.testing.processes import DAPHNE_READY, free_port, start_daphne

from .conftest import REPO

pytestmark = pytest.mark.django_db(transaction=False)

MAX_FRAME_BYTES = 65536  # the site's CHANGEFLOW_MAX_FRAME_BYTES (the default)
DAPHNE_LIMIT = DAPHNE_DEFAULT_MAX_SIZE  # 1 MiB: --websocket-max-message-size, -frame-size
MESSAGE_TOO_BIG, INVALID_PAYLOAD = 1009, 1007
SERVE = [sys.executable, "-m", "changeflow_channels.serve"]


async def closed_by_server(connection: Any, timeout: float = 10.0) -> websockets.ConnectionClosed:
    """Read until the server closes the connection; the ``ConnectionClosed`` it raised."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await connection.recv()
    return closed.value


async def still_usable(client: Any, table: str) -> None:
    """The connection answers a request after what came before."""
    answer = await client.request("subscribe", f"secdb.{table}")
    assert answer["event"] == "subscribed", answer


def padded(size: int) -> str:
    """A text frame of exactly ``size`` UTF-8 bytes (JSON, a subscribe with padding)."""
    head = '{"action": "subscribe", "stream": "secdb.x", "pad": "'
    return head + "x" * (size - len(head) - 2) + '"}'


async def test_a_100_kb_frame_gets_too_large_and_the_connection_stays_usable(
    site, make_user, connect, table
):
    client = await connect(user=make_user())
    await client.send(padded(100_000))
    answer = await client.recv()
    assert (answer["event"], answer["code"]) == ("error", "too_large"), answer
    assert answer["size"] == 100_000 and "id" not in answer, answer  # not read: its size
    await still_usable(client, table)


async def test_a_binary_frame_over_the_limit_gets_too_large_too(site, make_user, connect, table):
    client = await connect(user=make_user())
    await client.connection.send(b"\x00" * 100_000)
    answer = await client.recv()
    assert (answer["event"], answer["code"], answer["size"]) == ("error", "too_large", 100_000)
    await still_usable(client, table)


async def test_a_frame_of_exactly_daphnes_limit_gets_too_large(site, make_user, connect, table):
    """The consumer's limit and Daphne's agree: everything Daphne accepts above 64 KiB,
    up to and including its 1 MiB, is answered."""
    client = await connect(user=make_user())
    await client.send(padded(DAPHNE_LIMIT))
    answer = await client.recv()
    assert (answer["event"], answer["code"], answer["size"]) == ("error", "too_large", DAPHNE_LIMIT)
    await still_usable(client, table)


async def test_a_frame_over_daphnes_limit_is_closed_with_1009_and_a_close_frame(
    site, make_user, connect
):
    client = await connect(user=make_user())
    await client.send(padded(DAPHNE_LIMIT + 1))
    closed = await closed_by_server(client.connection)
    assert closed.rcvd is not None, "no close frame: the TCP connection was dropped (1006)"
    assert closed.rcvd.code == MESSAGE_TOO_BIG, closed


async def test_a_text_frame_of_invalid_utf8_is_closed_with_1007_and_a_close_frame(
    site, make_user, connect
):
    client = await connect(user=make_user())
    await client.connection.send(b'{"action": "subscribe", "stream": "\xff\xfe"}', text=True)
    closed = await closed_by_server(client.connection)
    assert closed.rcvd is not None, "no close frame: the TCP connection was dropped (1006)"
    assert closed.rcvd.code == INVALID_PAYLOAD, closed


async def test_other_connections_are_untouched_by_a_closed_one(site, make_user, connect, table):
    user = make_user()
    bystander = await connect(user=user)
    attacker = await connect(user=user)
    await attacker.send(padded(DAPHNE_LIMIT + 1))
    await closed_by_server(attacker.connection)
    await still_usable(bystander, table)


def serve(port: int, env: dict[str, str], *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SERVE, "-b", "127.0.0.1", "-p", str(port), *options, "tests.security.asgi:application"],
        env={**os.environ, **env},
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_refuses_a_frame_limit_daphne_would_cut_off(site):
    """CHANGEFLOW_MAX_FRAME_BYTES at 2 MiB against Daphne's 1 MiB: frames between would
    be closed, never answered too_large; the server does not start."""
    env = {**site.env, "CHANGEFLOW_TEST_MAX_FRAME_BYTES": str(2 * DAPHNE_LIMIT)}
    process = serve(free_port(), env)
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0, output
    assert "CHANGEFLOW_MAX_FRAME_BYTES (2097152)" in output, output
    assert "Listening on TCP address" not in output, output


async def test_with_daphnes_limits_raised_the_larger_limit_is_answered(site, make_user):
    """The same setting with Daphne's limits raised above it: a 1.5 MiB frame is answered
    ``too_large``, a frame over Daphne's new limit closed with 1009."""
    limit = 4 * DAPHNE_LIMIT
    port = free_port()
    process = start_daphne(
        "tests.security.asgi:application",
        port,
        env={**site.env, "CHANGEFLOW_TEST_MAX_FRAME_BYTES": str(2 * DAPHNE_LIMIT)},
        cwd=str(REPO),
        options=[
            "--websocket-max-message-size",
            str(limit),
            "--websocket-max-frame-size",
            str(limit),
        ],
    )
    try:
        process.wait_for(DAPHNE_READY, timeout=60)
        user = make_user()
        url = f"ws://127.0.0.1:{port}/ws/changeflow/"
        headers = {"Cookie": f"sessionid={user.session}"}
        origin = f"http://127.0.0.1:{port}"
        async with websockets.connect(
            url, origin=origin, additional_headers=headers, max_size=None
        ) as connection:
            await connection.send(padded(3 * DAPHNE_LIMIT))
            answer = await asyncio.wait_for(connection.recv(), 10)
            assert '"too_large"' in answer, answer
            await connection.send(padded(limit + 1))
            closed = await closed_by_server(connection)
            assert closed.rcvd is not None and closed.rcvd.code == MESSAGE_TOO_BIG, closed
    finally:
        process.stop()


# The agreement itself, and the system check (W009) against Daphne's defaults.


def test_limit_problems_name_each_disagreement():
    conf = get_settings()
    assert limit_problems(conf, DAPHNE_LIMIT, DAPHNE_LIMIT) == []
    assert limit_problems(conf, 0, 0) == []  # no limit at all (not recommended)
    low = limit_problems(conf, MAX_FRAME_BYTES, DAPHNE_LIMIT)  # both settings disagree
    assert len(low) == 2 and "CHANGEFLOW_MAX_FRAME_BYTES (65536)" in low[0]
    frame_only = limit_problems(conf, DAPHNE_LIMIT, MAX_FRAME_BYTES)
    assert len(frame_only) == 1 and "CHANGEFLOW_MAX_FRAME_BYTES" in frame_only[0]
    sent = limit_problems(conf, 500_000, 0)
    assert any("CHANGEFLOW_MAX_SENT_FRAME_BYTES (1000000)" in p for p in sent), sent


def test_the_system_check_warns_when_the_limits_pass_daphnes_defaults():
    assert "changeflow_channels.W009" not in {m.id for m in check_settings(None)}
    with override_settings(CHANGEFLOW_MAX_FRAME_BYTES=DAPHNE_LIMIT):
        found = [m for m in check_settings(None) if m.id == "changeflow_channels.W009"]
    assert len(found) == 1 and "--websocket-max-message-size" in found[0].hint
