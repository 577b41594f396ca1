"""Item 3: tokens that end, and a cap on the connections of a token and a user.

Attacks (issue 15): a connection kept receiving for 12 s on a token with a 6 s lifetime
(the re-checks ignored expiry); a token kept working after its user changed password;
one token opened any number of connections at once.

The clients send the site's Origin, as a browser page using a token would: the old
wiring let them in, so each test fails on what it is about."""

from __future__ import annotations

import asyncio

import pytest

from .identity_helpers import ending, error_codes, open_or_refusal, origin_of, subscribed

LIFETIME = 4.0  # seconds: the extra Daphne's CHANGEFLOW_TOKEN_MAX_AGE (re-checks every 1 s)


@pytest.fixture
def short_lived(start_daphne_with):
    """A Daphne of the site whose tokens last LIFETIME seconds."""
    return start_daphne_with(CHANGEFLOW_TEST_TOKEN_MAX_AGE=str(LIFETIME))


@pytest.fixture
def capped(start_daphne_with):
    """Two Daphnes of the site that allow 2 connections per token and per user."""
    return [start_daphne_with(CHANGEFLOW_TEST_TOKEN_CONNECTIONS="2") for _ in range(2)]


async def test_an_expired_token_ends_the_connection_at_the_next_recheck(
    site, make_user, connect, table, push, short_lived
):
    alice = make_user()
    alice.token = site.admin("token", alice.name)["token"]  # issued now
    stream = f"secdb.{table}"
    loop = asyncio.get_running_loop()
    issued = loop.time()
    client = await connect(user=alice, via="token", url=short_lived, origin=origin_of(short_lived))
    await subscribed(client, stream)
    await push(table, {"id": "a1", "owner": alice.name})
    assert (await client.wait_for(lambda f: f.get("event") == "change"))["new_val"]["id"] == "a1"
    # Expiry, then at most one re-check (1 s) later, the end: no change after it.
    frames, code = await ending(client, timeout=LIFETIME + 5)
    assert code == 4001
    assert error_codes(frames) == ["unauthorized"] and "expired" in frames[-1]["message"]
    assert loop.time() - issued < LIFETIME + 3
    # And the token opens nothing any more.
    again, refusal = await open_or_refusal(
        connect, user=alice, via="token", url=short_lived, origin=origin_of(short_lived)
    )
    assert again is None and refusal[1] == 4001


@pytest.mark.parametrize("change", ["password", "deactivate"])
async def test_a_new_password_or_a_deactivation_revokes_the_token(
    site, make_user, connect, table, push, change
):
    alice = make_user()
    stream = f"secdb.{table}"
    client = await connect(user=alice, via="token")
    await subscribed(client, stream)
    await push(table, {"id": "a1", "owner": alice.name})
    assert (await client.wait_for(lambda f: f.get("event") == "change"))["new_val"]["id"] == "a1"
    site.admin(
        *(
            ["password", alice.name, "new-secret"]
            if change == "password"
            else ["deactivate", alice.name]
        )
    )
    frames, code = await ending(client, timeout=10)  # re-checks every second
    assert code == 4002 and error_codes(frames) == ["unauthorized"]
    assert "revoked" in frames[-1]["message"]
    again, refusal = await open_or_refusal(connect, user=alice, via="token")
    assert again is None and refusal[1] == 4002


async def test_a_token_and_a_user_open_at_most_the_cap_across_daphnes(
    site, make_user, connect, capped
):
    alice = make_user()
    first, second = capped

    async def opened(url, token=None):
        if token is not None:
            alice.token = token
        return await open_or_refusal(
            connect, user=alice, via="token", url=url, origin=origin_of(url)
        )

    token = alice.token
    one, _ = await opened(first, token)
    two, _ = await opened(second, token)  # on another Daphne: counted together
    assert one is not None and two is not None
    three, refusal = await opened(first, token)
    assert three is None
    frames, code = refusal
    assert code == 4004 and error_codes(frames) == ["rate_limited"]
    assert "CHANGEFLOW_TOKEN_CONNECTIONS" in frames[0]["message"]
    # Another token of the same user: the user's cap is full too.
    other, refusal = await opened(second, site.admin("token", alice.name)["token"])
    assert other is None and refusal[1] == 4004 and "user" in refusal[0][0]["message"]
    # A closed connection frees its place (released when its consumer ends).
    await one.connection.close()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        four, refusal = await opened(first, token)
        if four is not None or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)  # the server releases the place once it sees the close
    assert four is not None, refusal


async def test_the_python_client_stops_with_the_reason_when_its_token_ends(
    site, make_user, table, push
):
    """``changeflow_channels.client`` reads the refusal (no bare 403 to guess from): a
    revoked token ends its subscriptions and pushes with ``unauthorized``, and it stops
    instead of reconnecting in a loop."""
    from changeflow_channels.client import ChangeflowClient, ChangeflowError

    alice = make_user()
    stream = f"secdb.{table}"
    async with ChangeflowClient(site.ws_url, token=alice.token, min_delay=0.05) as client:
        events = client.subscribe(stream)
        await asyncio.wait_for(events.subscribed(), 10)
        site.admin("password", alice.name, "new-secret")
        with pytest.raises(ChangeflowError) as ended:
            async with asyncio.timeout(10):
                async for _event in events:
                    pass
        assert ended.value.code == "unauthorized" and "revoked" in ended.value.message
        with pytest.raises(ChangeflowError) as refused:
            await asyncio.wait_for(client.push(stream, {"owner": alice.name}), 10)
        assert refused.value.code == "unauthorized"
    # A client whose token is refused at once learns it from its first subscription.
    async with ChangeflowClient(site.ws_url, token=alice.token) as client:
        with pytest.raises(ChangeflowError) as refused:
            await asyncio.wait_for(client.subscribe(stream).subscribed(), 10)
        assert refused.value.code == "unauthorized"
