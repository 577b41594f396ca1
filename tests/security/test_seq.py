"""Issue 15, item 6: ``seq`` must not reveal hidden activity under a row rule.

The attack: A's snapshot was at seq 7 and the next change A could see at 309,
so A learned that 301 changes it may not see had happened. Under a row rule a
subscription now numbers what it is sent (1, 2, 3... after its snapshot's 0),
and each frame carries an opaque ``cursor`` for resuming (docs/protocol.md,
"Positions under a row rule"). Everything runs for real: Daphne, Redis, the
worker and RethinkDB (both servers)."""

from __future__ import annotations

from typing import Any

from .conftest import DATABASE

FRAME_KEYS = {"event", "stream", "type", "old_val", "new_val", "epoch", "seq", "cursor"}


async def frames_until(client: Any, done: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Every frame received up to and including the first for which ``done`` holds."""
    seen: list[dict[str, Any]] = []

    def collect(frame: dict[str, Any]) -> bool:
        seen.append(frame)
        return bool(done(frame))

    await client.wait_for(collect, timeout)
    return seen


def is_change_of(doc_id: str, kind: str | None = None) -> Any:
    def check(frame: dict[str, Any]) -> bool:
        value = frame.get("new_val") or frame.get("old_val") or {}
        return (
            frame.get("event") == "change"
            and value.get("id") == doc_id
            and (kind is None or frame.get("type") == kind)
        )

    return check


def hidden(owner: str, prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}{n}", "owner": owner, "secret": n} for n in range(count)]


async def watched(connect: Any, user: Any, stream: str) -> Any:
    """A client of ``user`` subscribed to ``stream``: to wait until the worker has
    announced a change (so that a snapshot taken next includes it)."""
    client = await connect(user=user)
    await client.subscribe(stream)
    return client


async def snapshot_after(connect: Any, user: Any, stream: str) -> tuple[Any, dict[str, Any]]:
    client = await connect(user=user)
    answer = await client.request("subscribe", stream, snapshot=True)
    assert answer["event"] == "subscribed", answer
    snapshot = await client.wait_for(lambda f: f.get("event") == "snapshot")
    return client, snapshot


async def test_the_next_visible_change_tells_nothing_of_hidden_ones(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    stream = f"{DATABASE}.{table}"
    await push(table, {"id": "a0", "owner": alice.name})  # the table exists from here
    watch = await watched(connect, bob, stream)
    await push(table, hidden(bob.name, "b", 6))
    await frames_until(watch, is_change_of("b5"))  # the worker has read all 7
    client, snapshot = await snapshot_after(connect, alice, stream)
    assert [doc["id"] for doc in snapshot["documents"]] == ["a0"]
    assert snapshot["seq"] == 0, "the snapshot's seq counts the table's hidden changes"
    assert isinstance(snapshot["cursor"], str)

    await push(table, hidden(bob.name, "h", 300))  # 300 hidden inserts
    await push(table, {"secret": "changed"}, op="update", key="b0")  # and 1 hidden update
    await push(table, {"id": "a1", "owner": alice.name})
    (frame,) = await frames_until(client, is_change_of("a1"))

    assert frame["seq"] == snapshot["seq"] + 1, f"seq {frame['seq']} reveals hidden changes"
    assert set(frame) == FRAME_KEYS
    assert frame["epoch"] == snapshot["epoch"]
    # The cursor says nothing either: one length whatever the position, and
    # never the same twice (a fresh nonce).
    assert len(frame["cursor"]) == len(snapshot["cursor"])
    _, again = await snapshot_after(connect, alice, stream)
    assert again["seq"] == 0 and again["cursor"] != snapshot["cursor"]
    assert len(again["cursor"]) == len(snapshot["cursor"])


async def test_resuming_on_a_new_connection_gives_exactly_what_was_missed(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    stream = f"{DATABASE}.{table}"
    client = await connect(user=alice)
    await client.subscribe(stream)
    await push(table, hidden(bob.name, "x", 40))
    await push(table, {"id": "a1", "owner": alice.name})
    (last,) = await frames_until(client, is_change_of("a1"))
    assert last["seq"] == 1
    await client.connection.close()

    # Missed while away: hidden changes around two of alice's.
    await push(table, hidden(bob.name, "y", 50))
    await push(table, {"id": "a2", "owner": alice.name})
    await push(table, {"secret": "changed"}, op="update", key="y3")
    await push(table, {"n": 1}, op="update", key="a1")
    await push(table, hidden(bob.name, "z", 20))
    await push(table, {}, op="delete", key="y4")

    since = {"epoch": last["epoch"], "seq": last["seq"], "cursor": last["cursor"]}
    resumed = await connect(user=alice)
    answer = await resumed.request("subscribe", stream, since=since, snapshot=True)
    assert answer["event"] == "subscribed", answer
    await push(table, {"id": "a3", "owner": alice.name})  # a live one after the replay
    got = await frames_until(resumed, is_change_of("a3"))

    assert [(f["event"], f.get("type"), (f.get("new_val") or {}).get("id")) for f in got] == [
        ("change", "add", "a2"),
        ("change", "change", "a1"),
        ("change", "add", "a3"),
    ], "no resync, no snapshot, nothing hidden, nothing twice"
    assert [f["seq"] for f in got] == [2, 3, 4]
    assert {f["epoch"] for f in got} == {last["epoch"]}

    # Resuming from the middle gives the rest, numbered as before.
    middle = got[0]
    since = {"epoch": middle["epoch"], "seq": middle["seq"], "cursor": middle["cursor"]}
    third = await connect(user=alice)
    await third.request("subscribe", stream, since=since)
    await push(table, {"id": "a4", "owner": alice.name})
    again = await frames_until(third, is_change_of("a4"))
    assert [((f.get("new_val") or {}).get("id"), f["seq"]) for f in again] == [
        ("a1", 3),
        ("a3", 4),
        ("a4", 5),
    ]


async def first_two(client: Any) -> tuple[Any, ...]:
    """(event, reason, event) of the first two frames, or what came within 5 s."""
    got: list[dict[str, Any]] = []
    try:
        got.append(await client.recv(5))
        got.append(await client.recv(5))
    except TimeoutError:
        return (*((f["event"], f.get("seq")) for f in got), "nothing more")
    return (got[0]["event"], got[0].get("reason"), got[1]["event"])


async def test_since_cannot_probe_the_real_position(site, make_user, connect, table, push):
    """Made-up positions, altered cursors and another stream's cursor are all
    answered alike: ``resync`` (``no_position``) and a fresh snapshot, whatever
    the table's real position is."""
    alice, bob = make_user(), make_user()
    stream = f"{DATABASE}.{table}"
    client, _ = await snapshot_after(connect, alice, stream)
    await push(table, hidden(bob.name, "h", 30))
    await push(table, {"id": "a1", "owner": alice.name})
    (frame,) = await frames_until(client, is_change_of("a1"))
    epoch, cursor = frame["epoch"], frame.get("cursor", "c1.none")

    altered = cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")
    probes = [
        {"epoch": epoch, "seq": 5},  # inside the real history: would replay
        {"epoch": epoch, "seq": 31},  # the real position
        {"epoch": epoch, "seq": 10**6},  # beyond it
        {"epoch": epoch, "seq": 1, "cursor": altered},
        {"epoch": epoch, "seq": 1, "cursor": "c1.forged"},
    ]
    # And a valid cursor, of another stream.
    tries = [(stream, since) for since in probes]
    tries.append((f"{stream}_other", {"epoch": epoch, "seq": 1, "cursor": cursor}))
    answers = []
    for target, since in tries:
        probe = await connect(user=alice)
        answer = await probe.request("subscribe", target, since=since, snapshot=True)
        assert answer["event"] == "subscribed", answer
        answers.append(await first_two(probe))
    assert answers == [("resync", "no_position", "snapshot")] * len(tries)


async def test_a_filtered_subscription_under_a_row_rule_counts_what_it_gets(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    stream = f"{DATABASE}.{table}"
    client = await connect(user=alice)
    answer = await client.request("subscribe", stream, filter={"kind": "x"}, sub="xs")
    assert answer["event"] == "subscribed", answer
    await push(table, {"id": "a1", "owner": alice.name, "kind": "x"})
    await push(table, hidden(bob.name, "h", 25))
    await push(table, [{"id": f"o{n}", "owner": alice.name, "kind": "y"} for n in range(5)])
    await push(table, {"id": "a2", "owner": alice.name, "kind": "x"})
    got = await frames_until(client, is_change_of("a2"))
    assert [(f["new_val"]["id"], f["seq"], f["sub"]) for f in got] == [
        ("a1", 1, "xs"),
        ("a2", 2, "xs"),
    ]
