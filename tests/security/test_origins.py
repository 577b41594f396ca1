"""Item 2 (exact origins) and item 3's refusal of scripts: who may open a websocket
with a user's session cookie, and how a script learns why it was refused.

Attacks (issue 15): with A's session cookie, websockets from ``http://127.0.0.1:9999``,
``https://localhost:4443`` and ``http://LOCALHOST`` were accepted and subscribed as A;
a script with a valid token but no Origin got a bare 403."""

from __future__ import annotations

import pytest

from .identity_helpers import open_or_refusal, subscribed


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://127.0.0.1:9999", "127.0.0.1"),  # another port of the same host
        ("https://localhost:4443", "127.0.0.1"),
        ("http://LOCALHOST", "127.0.0.1"),
        ("https://127.0.0.1:{port}", "127.0.0.1"),  # the site's host and port, over https
        ("http://LOCALHOST:{port}", "localhost"),  # only the case differs: no browser sends it
    ],
)
async def test_a_session_from_another_origin_is_refused_with_a_reason(
    site, make_user, connect, table, origin, host
):
    alice = make_user()
    url = site.ws_url.replace("127.0.0.1", host)
    client, refusal = await open_or_refusal(
        connect, user=alice, origin=origin.format(port=site.port), url=url
    )
    assert client is None, "a foreign origin was served with the user's session"
    frames, code = refusal
    assert code == 4003
    assert [(f["event"], f["code"]) for f in frames] == [("error", "forbidden")]
    assert "origin" in frames[0]["message"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_sites_own_origin_is_served(site, make_user, connect, table, push, host):
    alice = make_user()
    stream = f"secdb.{table}"
    client = await connect(
        user=alice, origin=f"http://{host}:{site.port}", url=site.ws_url.replace("127.0.0.1", host)
    )
    await subscribed(client, stream)
    await push(table, {"id": "a1", "owner": alice.name})
    change = await client.wait_for(lambda f: f.get("event") == "change")
    assert change["new_val"]["id"] == "a1"


async def test_a_session_without_origin_is_refused_and_told_to_use_a_token(
    site, make_user, connect
):
    alice = make_user()
    client, refusal = await open_or_refusal(connect, user=alice, origin=None)
    assert client is None
    frames, code = refusal
    assert code == 4003 and [f["code"] for f in frames] == ["forbidden"]
    assert "token" in frames[0]["message"] and "Origin" in frames[0]["message"]


@pytest.mark.parametrize("via", ["token", "query"])
async def test_a_script_with_a_token_and_no_origin_is_served(
    site, make_user, connect, table, push, via
):
    alice = make_user()
    stream = f"secdb.{table}"
    client = await connect(user=alice, via=via, origin=None)
    await subscribed(client, stream)
    await push(table, {"id": "a1", "owner": alice.name})
    change = await client.wait_for(lambda f: f.get("event") == "change")
    assert change["new_val"]["id"] == "a1"


async def test_a_script_with_a_bad_token_is_told_so(site, make_user, connect):
    alice = make_user()
    alice.token = alice.token[:-4] + ("AAAA" if not alice.token.endswith("AAAA") else "BBBB")
    client, refusal = await open_or_refusal(connect, user=alice, via="token", origin=None)
    assert client is None
    frames, code = refusal
    assert code == 4002 and [f["code"] for f in frames] == ["unauthorized"]
    assert "token" in frames[0]["message"]


async def test_a_token_does_not_excuse_a_foreign_origin(site, make_user, connect):
    alice = make_user()
    client, refusal = await open_or_refusal(
        connect, user=alice, via="token", origin="http://127.0.0.1:9999"
    )
    assert client is None and refusal[1] == 4003
