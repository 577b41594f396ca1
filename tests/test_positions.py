"""Positions under a row rule (web/positions.py): a subscription's own numbers,
opaque resume cursors, and where a resumed subscription starts. Plain code: no
channel layer, no consumer, no event loop (issue 15, item 6)."""

from __future__ import annotations

import base64
from typing import Any

from changeflow_channels.sync import ClientSince
from changeflow_channels.web.actions import Action, Deliver, RequestSync, Resync, Snapshot
from changeflow_channels.web.positions import (
    CURSOR_PREFIX,
    Cursor,
    Cursors,
    Numbering,
    resume_from,
    stamp,
)
from changeflow_channels.web.protocol import change_frame
from changeflow_channels.web.subscriptions import Subscription

CURSORS = Cursors(["a secret key"])
EPOCH = "0123456789abcdef0123456789abcdef"


def change(seq: int, owner: str, epoch: str = EPOCH) -> dict[str, Any]:
    return {
        "type": "changeflow.change",
        "database": "db",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": {"id": seq, "owner": owner}},
        "epoch": epoch,
        "seq": seq,
    }


def sent(sub: Subscription, actions: list[Action], who: str = "a") -> list[dict[str, Any]]:
    """The frames a client ``who`` gets under a row rule (its own rows only), as
    web/seen.py makes them: hidden changes are left out and take no number."""
    frames = []
    for action in actions:
        if isinstance(action, Deliver):
            if action.message["change"]["new_val"]["owner"] != who:
                continue
            frame = change_frame(action.message)
            message = action.message
            assert sub.numbering is not None
            stamp(
                frame,
                sub.numbering,
                CURSORS,
                sub.stream,
                message["epoch"],
                message["seq"],
                advance=True,
            )
            frames.append(frame)
        elif isinstance(action, Resync):
            frames.append({"event": "resync", "reason": action.reason})
        elif isinstance(action, Snapshot):
            frame = {"event": "snapshot", "epoch": action.epoch, "seq": action.seq}
            assert sub.numbering is not None
            stamp(
                frame, sub.numbering, CURSORS, sub.stream, action.epoch, action.seq, advance=False
            )
            frames.append(frame)
    return frames


def answer(request: RequestSync, epoch: str, seq: int, **fields: Any) -> dict[str, Any]:
    base = {"id": request.request_id, "epoch": epoch, "seq": seq, "resync": None}
    return {"changes": None, "snapshot": None, **base, **fields}


def the_request(actions: list[Action]) -> RequestSync:
    (request,) = [a for a in actions if isinstance(a, RequestSync)]
    return request


# -- cursors ----------------------------------------------------------------------


def test_a_cursor_opens_to_its_position_and_only_on_its_stream():
    cursor = CURSORS.seal("db.t", EPOCH, 309, 1)
    assert cursor.startswith(CURSOR_PREFIX)
    assert CURSORS.open("db.t", cursor) == Cursor(EPOCH, 309, 1)
    assert CURSORS.open("db.other", cursor) is None
    assert Cursors(["another key"]).open("db.t", cursor) is None
    none = CURSORS.seal("db.t", None, 0, 0)
    assert CURSORS.open("db.t", none) == Cursor(None, 0, 0)


def test_a_cursor_tells_nothing_one_length_and_never_twice_the_same():
    small = CURSORS.seal("db.t", EPOCH, 7, 0)
    large = CURSORS.seal("db.t", EPOCH, 2**52, 2**40)
    assert len(small) == len(large)
    assert CURSORS.seal("db.t", EPOCH, 7, 0) != small  # a fresh nonce each time
    raw = base64.urlsafe_b64decode(small[len(CURSOR_PREFIX) :] + "==")
    assert EPOCH.encode() not in raw and (7).to_bytes(8, "big") not in raw


def test_altered_or_forged_cursors_are_refused():
    cursor = CURSORS.seal("db.t", EPOCH, 309, 1)
    body = bytearray(base64.urlsafe_b64decode(cursor[len(CURSOR_PREFIX) :] + "=="))
    for index in (0, 13, len(body) - 1):  # nonce, ciphertext, tag
        altered = bytearray(body)
        altered[index] ^= 1
        text = CURSOR_PREFIX + base64.urlsafe_b64encode(bytes(altered)).decode().rstrip("=")
        assert CURSORS.open("db.t", text) is None
    for forged in ("", "c1.", "c1.!!!", "c1.AAAA", "x" + cursor[1:], cursor[:-4], cursor + "AAAA"):
        assert CURSORS.open("db.t", forged) is None


def test_a_rotated_secret_still_opens_the_old_cursors():
    old = Cursors(["old key"]).seal("db.t", EPOCH, 5, 2)
    rotated = Cursors(["new key", "old key"])
    assert rotated.open("db.t", old) == Cursor(EPOCH, 5, 2)
    assert Cursors(["old key"]).open("db.t", rotated.seal("db.t", EPOCH, 5, 2)) is None


# -- numbering and resuming -------------------------------------------------------


def test_numbers_count_what_was_sent_within_an_epoch():
    numbering = Numbering()
    assert numbering.snapshot(EPOCH) == 0
    assert [numbering.change(EPOCH) for _ in range(3)] == [1, 2, 3]
    assert numbering.snapshot(EPOCH) == 3  # a snapshot takes no number of its own
    assert numbering.change("e2") == 1  # another epoch starts again
    assert numbering.snapshot(None) == 0


def test_where_a_subscription_starts():
    cursor = CURSORS.seal("db.t", EPOCH, 309, 4)
    valid = ClientSince((EPOCH, 4), cursor)
    forged = ClientSince((EPOCH, 5), "c1.forged")
    made_up = ClientSince((EPOCH, 5))

    def start(since: ClientSince | None, numbered: bool, **options: Any) -> Any:
        return resume_from(since, "db.t", numbered=numbered, cursors=CURSORS, **options)

    # Without a row rule: as it always was (a cursor, if any, is still the truth).
    assert start(made_up, False).since == (EPOCH, 5)
    assert start(valid, False).since == (EPOCH, 309)
    assert start(None, False).numbering is None
    # Under a row rule: the cursor's real position, its numbers going on.
    resumed = start(valid, True)
    assert (resumed.since, resumed.numbering, resumed.lost) == (
        (EPOCH, 309),
        Numbering(EPOCH, 4),
        False,
    )
    # No valid cursor: never a position the client made up; its numbers go on.
    for since in (made_up, forged, ClientSince((EPOCH, 5), CURSORS.seal("db.x", EPOCH, 9, 5))):
        lost = start(since, True)
        assert (lost.since, lost.numbering, lost.lost) == (None, Numbering(EPOCH, 5), True)
    # Subscribing again on the connection: the numbers go on from the one replaced.
    again = start(None, True, previous=Numbering(EPOCH, 12))
    assert (again.since, again.numbering, again.lost) == (None, Numbering(EPOCH, 12), False)
    assert start(None, True).numbering == Numbering()


def test_a_lost_position_is_a_resync_and_a_snapshot_when_asked():
    sub = Subscription("db.t", "db", "t", snapshot=True, numbering=Numbering(EPOCH, 5))
    actions = sub.start(None, lost=True)
    assert isinstance(actions[0], Resync) and actions[0].reason == "no_position"
    request = the_request(actions)
    assert (request.since, request.snapshot) == (None, True)
    plain = Subscription("db.t", "db", "t", numbering=Numbering(EPOCH, 5))
    assert [type(a) for a in plain.start(None, lost=True)] == [Resync]


# -- the state machine under a row rule ---------------------------------------------


def test_hidden_changes_take_no_numbers_and_a_cursor_resumes_exactly():
    sub = Subscription("db.t", "db", "t", snapshot=True, numbering=Numbering())
    request = the_request(sub.start())
    (snapshot,) = sent(
        sub,
        sub.sync_answered(
            answer(
                request,
                EPOCH,
                7,
                snapshot={
                    "documents": [],
                    "truncated": False,
                },
            )
        ),
    )
    assert snapshot["seq"] == 0
    frames = []
    for seq in range(8, 309):  # 301 changes of another user
        frames += sent(sub, sub.offer(change(seq, "b")))
    frames += sent(sub, sub.offer(change(309, "a")))
    assert [(f["new_val"]["id"], f["seq"]) for f in frames] == [(309, 1)]

    # A gap among hidden changes is filled as ever, numbers unchanged by it.
    gap = sub.offer(change(312, "a"))
    request = the_request(gap)
    assert request.since == (EPOCH, 309)
    healed = sub.sync_answered(
        answer(request, EPOCH, 312, changes=[change(310, "b"), change(311, "a"), change(312, "a")])
    )
    frames = sent(sub, healed)
    assert [(f["new_val"]["id"], f["seq"]) for f in frames] == [(311, 2), (312, 3)]

    # On a new connection, from the cursor of the frame numbered 2.
    since = ClientSince((EPOCH, 2), frames[0]["cursor"])
    resume = resume_from(since, "db.t", numbered=True, cursors=CURSORS)
    again = Subscription("db.t", "db", "t", snapshot=True, numbering=resume.numbering)
    request = the_request(again.start(resume.since, lost=resume.lost))
    assert (request.since, request.snapshot) == ((EPOCH, 311), True)
    replay = [change(312, "a"), change(313, "b"), change(314, "a")]
    frames = sent(again, again.sync_answered(answer(request, EPOCH, 314, changes=replay)))
    assert [(f["new_val"]["id"], f["seq"]) for f in frames] == [(312, 3), (314, 4)]


def test_a_new_epoch_starts_the_numbers_again():
    sub = Subscription("db.t", "db", "t", numbering=Numbering())
    sub.start()
    assert [f["seq"] for f in sent(sub, sub.offer(change(40, "a")))] == [1]
    frames = sent(sub, sub.offer(change(3, "a", epoch="e2")))  # the feed restarted
    assert [(f["event"], f["epoch"] if "epoch" in f else None) for f in frames] == [
        ("resync", None),
        ("change", "e2"),
    ]
    assert frames[1]["seq"] == 1
