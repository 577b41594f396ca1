"""Item 5: the permission re-check fails closed.

Attack (issue 15): while the auth database was unreachable, a deactivated user kept
receiving for 10 s ("re-check failed; keeping the subscriptions"). Here a Daphne of the
site reads users and sessions from a copy of the site's sqlite file, which the test
takes away for real (Daphne's next connection finds an empty database: every query
fails), then puts back."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from .identity_helpers import ending, error_codes, open_or_refusal, origin_of, subscribed

GRACE = 2.0  # the Daphne's CHANGEFLOW_RECHECK_GRACE (re-checks every 1 s)


def copy_database(source: str, target: str) -> None:
    with sqlite3.connect(source) as original, sqlite3.connect(target) as copy:
        original.backup(copy)


@pytest.mark.parametrize("via", ["session", "token"])
async def test_subscriptions_end_when_the_user_cannot_be_checked_and_resume_after(
    site, make_user, connect, table, push, start_daphne_with, tmp_path, via
):
    alice = make_user()
    database = str(tmp_path / "auth.sqlite3")
    copy_database(site.env["CHANGEFLOW_TEST_DB_PATH"], database)
    url = start_daphne_with(
        CHANGEFLOW_TEST_DB_PATH=database, CHANGEFLOW_TEST_RECHECK_GRACE=str(GRACE)
    )
    stream = f"secdb.{table}"
    client = await connect(user=alice, via=via, url=url, origin=origin_of(url))
    await subscribed(client, stream)
    await push(table, {"id": "a1", "owner": alice.name})
    seen = await client.wait_for(lambda f: f.get("event") == "change")
    # Where the client stands (under a row rule with the frame's opaque cursor, as changeflow.js).
    position = {key: seen[key] for key in ("epoch", "seq", "cursor") if key in seen}

    away = database + ".away"
    os.replace(database, away)  # the auth database is gone
    loop = asyncio.get_running_loop()
    gone = loop.time()
    try:
        frames, code = await ending(client, timeout=GRACE + 8)
        elapsed = loop.time() - gone
        assert code == 4012
        assert error_codes(frames) == ["unavailable", "unavailable"]
        ended = [f for f in frames if f.get("stream") == stream]
        assert len(ended) == 1 and ended[0]["code"] == "unavailable"
        # Kept for the grace (tried again meanwhile), not much longer.
        assert GRACE - 0.2 <= elapsed <= GRACE + 4, elapsed
        await push(table, {"id": "a2", "owner": alice.name})  # missed while cut off
        # Meanwhile a new connection is refused, and told why (not a bare 500).
        refused, refusal = await open_or_refusal(
            connect, user=alice, via=via, url=url, origin=origin_of(url)
        )
        assert refused is None and refusal[1] == 4012
        assert error_codes(refusal[0]) == ["unavailable"]
    finally:
        os.replace(away, database)  # back
    # The client resumes where it stopped and gets what it missed.
    again = await connect(user=alice, via=via, url=url, origin=origin_of(url))
    answer = await again.request("subscribe", stream, since=position)
    assert answer["event"] == "subscribed", answer
    missed = await again.wait_for(lambda f: f.get("event") == "change")
    assert missed["new_val"]["id"] == "a2"
