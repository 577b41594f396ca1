"""The security site itself works: a logged-in user subscribes and sees own rows only."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets


async def test_a_user_sees_own_rows_only(site, make_user, connect, table, push):
    alice, bob = make_user(), make_user()
    stream = f"secdb.{table}"
    await push(table, {"id": "b1", "owner": bob.name})
    client = await connect(user=alice)
    answer = await client.request("subscribe", stream)
    assert answer["event"] == "subscribed"
    await push(table, {"id": "b2", "owner": bob.name})
    await push(table, {"id": "a1", "owner": alice.name})
    frame = await client.recv()
    assert (frame["event"], frame["new_val"]["id"]) == ("change", "a1")


async def test_anonymous_is_refused(site, connect, table):
    client = await connect()
    answer = await client.request("subscribe", f"secdb.{table}")
    assert answer["code"] == "forbidden"


async def test_a_foreign_origin_was_accepted_before(site, make_user):
    """Sanity of the harness's refusal path: a foreign host name is refused (accepted,
    told why in an error frame, closed with 4003: docs/protocol.md, "Close codes")."""
    async with websockets.connect(
        site.ws_url, origin="http://evil.example", open_timeout=10
    ) as connection:
        frame = json.loads(await asyncio.wait_for(connection.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)
    assert frame["code"] == "forbidden" and closed.value.rcvd.code == 4003
