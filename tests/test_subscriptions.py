"""A subscription's delivery rules as plain code: events in, actions out.

No channel layer, no consumer, no event loop: each test feeds a ``Subscription``
the messages a worker (and the consumer's timers) would and checks the actions.
"""

from __future__ import annotations

from typing import Any

from changeflow_channels.web import subscriptions
from changeflow_channels.web.actions import (
    Action,
    CancelTimers,
    Deliver,
    RequestSync,
    Resync,
    RetrySyncLater,
    Snapshot,
    TimeOutLater,
)
from changeflow_channels.web.subscriptions import (
    JITTER,
    MAX_HELD,
    SYNC_RESEND,
    SYNC_RESEND_MAX,
    SYNC_RETRY,
    Subscription,
)


def change(seq: int, epoch: str | None = "e1") -> dict[str, Any]:
    return {
        "type": "changeflow.change",
        "database": "db",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": {"id": seq}},
        "epoch": epoch,
        "seq": seq,
    }


def answer(request_id: str, epoch: str | None, seq: int, **fields: Any) -> dict[str, Any]:
    """The worker's ``changeflow.sync.result``."""
    return {
        "type": "changeflow.sync.result",
        "id": request_id,
        "database": "db",
        "table": "t",
        "epoch": epoch,
        "seq": seq,
        "changes": None,
        "resync": None,
        "snapshot": None,
        **fields,
    }


def subscription(**options: Any) -> Subscription:
    return Subscription("db.t", "db", "t", **{"sync_timeout": 10.0, **options})


def seqs(actions: list[Action]) -> list[tuple[int, bool]]:
    return [(a.message["seq"], a.live) for a in actions if isinstance(a, Deliver)]


def requests(actions: list[Action]) -> list[RequestSync]:
    return [a for a in actions if isinstance(a, RequestSync)]


def the_request(actions: list[Action]) -> RequestSync:
    (request,) = requests(actions)
    return request


def frames(actions: list[Action]) -> list[Any]:
    """What the client gets, in order: changes by seq, resyncs and snapshots."""
    seen: list[Any] = []
    for action in actions:
        if isinstance(action, Deliver):
            seen.append(action.message["seq"])
        elif isinstance(action, Resync):
            seen.append(("resync", action.reason))
        elif isinstance(action, Snapshot):
            seen.append(("snapshot", action.epoch, action.seq))
    return seen


def test_in_order_changes_are_delivered_and_repeats_dropped():
    sub = subscription()
    assert sub.start() == []
    assert seqs(sub.offer(change(5))) == [(5, True)]  # a plain subscription starts where it joins
    assert seqs(sub.offer(change(6))) == [(6, True)]
    assert sub.offer(change(6)) == []  # a repeat
    assert sub.offer(change(4)) == []  # older still
    assert (sub.epoch, sub.seq) == ("e1", 6)


def test_a_gap_is_held_and_healed_by_the_sync_answer():
    sub = subscription()
    sub.offer(change(1))
    actions = sub.offer(change(4))  # 2 and 3 were lost
    request = the_request(actions)
    assert (request.since, request.snapshot) == (("e1", 1), False)
    assert TimeOutLater(request.request_id, 10.0) in actions
    [resend] = [a.delay for a in actions if isinstance(a, RetrySyncLater)]  # one at a time
    assert SYNC_RESEND * JITTER[0] <= resend <= SYNC_RESEND * JITTER[1]
    assert frames(actions) == []
    assert sub.offer(change(5)) == []  # held meanwhile
    healed = sub.sync_answered(
        answer(request.request_id, "e1", 4, changes=[change(2), change(3), change(4)])
    )
    assert seqs(healed) == [(2, False), (3, False), (4, False), (5, True)]
    assert (sub.pending, sub.held, sub.seq) == (None, [], 5)


def test_a_new_gap_among_the_held_changes_keeps_the_rest_held_for_its_own_sync():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    for seq in (4, 6, 7):  # 5 lost too
        sub.offer(change(seq))
    actions = sub.sync_answered(answer(request.request_id, "e1", 3, changes=[change(2), change(3)]))
    assert seqs(actions) == [(2, False), (3, False), (4, True)]
    assert the_request(actions).since == ("e1", 4)
    assert sub.held == [change(6), change(7)]


def test_an_answer_to_another_request_is_ignored():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    assert sub.sync_answered(answer("older", "e1", 3, changes=[change(2)])) == []
    assert sub.pending == request.request_id
    assert sub.timed_out("older") == [] and sub.retry_due("older") == []


def test_a_gap_the_history_cannot_fill_is_a_resync():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(50)))
    actions = sub.sync_answered(answer(request.request_id, "e1", 50, resync="history_exceeded"))
    assert frames(actions) == [("resync", "history_exceeded")]  # 50 is already in the position
    assert sub.offer(change(51)) == [Deliver(change(51))]


def test_a_gap_in_a_snapshot_subscription_that_cannot_be_filled_brings_a_snapshot():
    sub = subscription(snapshot=True)
    start = the_request(sub.start())
    sub.sync_answered(
        answer(start.request_id, "e1", 1, snapshot={"documents": [], "truncated": False})
    )
    request = the_request(sub.offer(change(50)))
    assert (request.since, request.snapshot) == (("e1", 1), True)
    documents = [{"id": 1}]
    actions = sub.sync_answered(
        answer(
            request.request_id,
            "e1",
            50,
            resync="history_exceeded",
            snapshot={"documents": documents, "truncated": False},
        )
    )
    assert frames(actions) == [("resync", "history_exceeded"), ("snapshot", "e1", 50)]
    assert Snapshot(documents, False, "e1", 50) in actions


def test_a_new_epoch_resyncs_a_plain_subscription_and_goes_on_from_there():
    sub = subscription()
    sub.offer(change(7))
    actions = sub.offer(change(1, epoch="e2"))
    assert frames(actions) == [("resync", "epoch_changed"), 1]
    assert (sub.epoch, sub.seq, sub.pending) == ("e2", 1, None)


def test_a_new_epoch_brings_a_snapshot_subscription_a_fresh_snapshot_then_what_followed():
    sub = subscription(snapshot=True)
    start = the_request(sub.start())
    assert (start.since, start.snapshot) == (None, True)
    first = sub.sync_answered(
        answer(start.request_id, "e1", 5, snapshot={"documents": [{"id": 1}], "truncated": False})
    )
    assert frames(first) == [("snapshot", "e1", 5)]
    assert sub.offer(change(5)) == []  # in the snapshot already
    assert seqs(sub.offer(change(6))) == [(6, True)]
    restarted = sub.offer(change(1, epoch="e2"))
    assert frames(restarted) == [("resync", "epoch_changed")]
    request = the_request(restarted)
    assert (request.since, request.snapshot) == (None, True)
    assert sub.offer(change(2, epoch="e2")) == []  # held
    after = sub.sync_answered(
        answer(request.request_id, "e2", 1, snapshot={"documents": [], "truncated": False})
    )
    assert frames(after) == [("snapshot", "e2", 1), 2]  # 1 is in the snapshot


def test_changes_arriving_while_the_snapshot_is_asked_are_held_and_released_after():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    for seq in (3, 4, 5, 6):
        assert sub.offer(change(seq)) == []
    actions = sub.sync_answered(
        answer(request.request_id, "e1", 4, snapshot={"documents": [], "truncated": False})
    )
    assert frames(actions) == [("snapshot", "e1", 4), 5, 6]
    assert [a.live for a in actions if isinstance(a, Deliver)] == [True, True]


def test_resuming_after_since_replays_what_was_missed():
    sub = subscription()
    request = the_request(sub.start(("e1", 3)))
    assert request.since == ("e1", 3) and (sub.epoch, sub.seq) == ("e1", 3)
    actions = sub.sync_answered(answer(request.request_id, "e1", 5, changes=[change(4), change(5)]))
    assert seqs(actions) == [(4, False), (5, False)]


def test_a_batch_that_continues_exactly_is_taken_whole_anything_else_is_not():
    sub = subscription()
    assert sub.take_batch([change(1), change(2), change(3)])  # nothing delivered yet: it joins
    assert (sub.epoch, sub.seq) == ("e1", 3)
    assert sub.take_batch([change(4), change(5)])
    assert not sub.take_batch([change(7), change(8)])  # a gap
    assert not sub.take_batch([change(6), change(8)])  # not consecutive
    assert not sub.take_batch([change(6), change(1, epoch="e2")])  # two epochs
    assert not sub.take_batch([change(1, epoch="e2"), change(2, epoch="e2")])  # a new epoch
    assert sub.seq == 5
    # change by change instead: the gap is held for a sync
    actions = [a for c in (change(7), change(8)) for a in sub.offer(c)]
    request = the_request(actions)
    assert not sub.take_batch([change(9)])  # a sync is pending
    healed = sub.sync_answered(answer(request.request_id, "e1", 6, changes=[change(6)]))
    assert seqs(healed) == [(6, False), (7, True), (8, True)]


def test_a_sync_the_worker_cannot_answer_yet_is_asked_again_later():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    retry = sub.sync_answered(answer(request.request_id, None, 0, resync="unavailable"))
    # Instead of the resend planned (the timeout stays), one shortly.
    cancel, again = retry
    assert cancel == CancelTimers(request.request_id, keep_timeout=True)
    assert isinstance(again, RetrySyncLater) and again.request_id == request.request_id
    assert SYNC_RETRY * JITTER[0] <= again.delay <= SYNC_RETRY * JITTER[1]
    assert sub.pending == request.request_id and sub.held == [change(3)]
    assert requests(sub.retry_due(request.request_id)) == [request]  # the same, sent again
    healed = sub.sync_answered(answer(request.request_id, "e1", 3, changes=[change(2), change(3)]))
    assert seqs(healed) == [(2, False), (3, False)]
    assert CancelTimers(request.request_id) in healed
    assert sub.retry_due(request.request_id) == []  # answered: nothing more to send
    assert sub.sync_unavailable() == []  # nothing asked


def test_a_sync_that_times_out_is_a_resync_unavailable_then_the_held_changes():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(5)))
    sub.offer(change(6))
    actions = sub.timed_out(request.request_id)
    assert frames(actions) == [("resync", "unavailable"), 5, 6]
    assert (sub.pending, sub.epoch, sub.seq) == (None, "e1", 6)
    assert sub.timed_out(request.request_id) == []  # once


def test_a_snapshot_subscription_whose_sync_times_out_asks_for_a_snapshot_again():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    sub.offer(change(3))
    actions = sub.timed_out(request.request_id)
    assert frames(actions) == [("resync", "unavailable")]
    again = the_request(actions)
    assert again.request_id != request.request_id
    assert (again.since, again.snapshot) == (None, True)
    assert sub.held == [change(3)]
    after = sub.sync_answered(
        answer(again.request_id, "e1", 2, snapshot={"documents": [], "truncated": False})
    )
    assert frames(after) == [("snapshot", "e1", 2), 3]


def test_the_first_change_of_a_table_that_did_not_exist_when_subscribed():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    empty = sub.sync_answered(
        answer(request.request_id, None, 0, snapshot={"documents": [], "truncated": False})
    )
    assert frames(empty) == [("snapshot", None, 0)]
    assert seqs(sub.offer(change(1))) == [(1, True)]  # its very first change: no resync
    assert (sub.epoch, sub.seq) == ("e1", 1)


def test_a_table_that_appeared_with_changes_already_missed_is_filled_from_its_start():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    sub.sync_answered(
        answer(request.request_id, None, 0, snapshot={"documents": [], "truncated": False})
    )
    actions = sub.offer(change(3))
    fill = the_request(actions)
    assert fill.since == ("e1", 0) and frames(actions) == []
    healed = sub.sync_answered(answer(fill.request_id, "e1", 2, changes=[change(1), change(2)]))
    assert seqs(healed) == [(1, False), (2, False), (3, True)]


def test_too_many_held_changes_are_dropped_for_a_history_exceeded_resync(monkeypatch):
    monkeypatch.setattr(subscriptions, "MAX_HELD", 3)
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))  # held: 3
    for seq in (4, 5, 6):  # held: 3 4 5, then 6 overflows: all dropped
        sub.offer(change(seq))
    assert sub.held == [] and sub.given_up
    sub.offer(change(7))  # held after the overflow
    actions = sub.sync_answered(answer(request.request_id, "e1", 3, changes=[change(2), change(3)]))
    assert frames(actions) == [2, 3, ("resync", "history_exceeded")]
    gap = the_request(actions)  # 7 follows 3: a gap of its own
    assert gap.since == ("e1", 3) and sub.held == [change(7)]
    assert MAX_HELD == 10_000  # the real limit, untouched


def test_a_snapshot_subscription_that_held_too_much_gets_a_fresh_snapshot():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    sub.given_up = True  # held more than MAX_HELD meanwhile
    actions = sub.sync_answered(
        answer(request.request_id, "e1", 2, snapshot={"documents": [], "truncated": False})
    )
    assert frames(actions) == [("snapshot", "e1", 2), ("resync", "history_exceeded")]
    again = the_request(actions)
    assert (again.since, again.snapshot) == (None, True)


def test_a_recovered_layer_asks_what_was_missed():
    sub = subscription()
    assert sub.layer_recovered() == []  # nothing delivered yet: nothing to ask
    sub.offer(change(4))
    request = the_request(sub.layer_recovered())
    assert request.since == ("e1", 4)
    assert sub.layer_recovered() == []  # one in flight already
    actions = sub.sync_answered(answer(request.request_id, "e1", 5, changes=[change(5)]))
    assert seqs(actions) == [(5, False)]
    snapshots = subscription(snapshot=True)
    first = the_request(snapshots.start())
    snapshots.timed_out(first.request_id)  # asks again
    assert snapshots.layer_recovered() == []
    positionless = subscription(snapshot=True)  # no position, nothing asked (not started)
    assert the_request(positionless.layer_recovered()).since is None


def test_named_subscriptions_tag_their_frames():
    assert subscription(name="a").tag({"event": "resync"}) == {"event": "resync", "sub": "a"}
    assert subscription().tag({"event": "resync"}) == {"event": "resync"}
    assert subscription(name=3).key == ("db.t", 3)


# -- a feed's new epoch, announced at once (changeflow.epoch; issue 14, item 2) -------------


def test_a_new_epoch_resyncs_a_plain_subscription_at_once_and_goes_on_from_its_position():
    sub = subscription()
    sub.offer(change(7))
    actions = sub.epoch_started("e2", 0)
    assert frames(actions) == [("resync", "epoch_changed")] and requests(actions) == []
    assert (sub.epoch, sub.seq, sub.pending) == ("e2", 0, None)
    assert seqs(sub.offer(change(1, epoch="e2"))) == [(1, True)]  # no second resync


def test_a_new_epoch_brings_a_snapshot_subscription_a_fresh_snapshot_at_once():
    sub = subscription(snapshot=True)
    start = the_request(sub.start())
    sub.sync_answered(
        answer(start.request_id, "e1", 5, snapshot={"documents": [{"id": 1}], "truncated": False})
    )
    actions = sub.epoch_started("e2", 0)
    assert frames(actions) == [("resync", "epoch_changed")]
    fresh = the_request(actions)
    assert (fresh.since, fresh.snapshot) == (None, True)
    assert sub.offer(change(1, epoch="e2")) == []  # held until the snapshot
    after = sub.sync_answered(
        answer(fresh.request_id, "e2", 0, snapshot={"documents": [{"id": 2}], "truncated": False})
    )
    assert frames(after) == [("snapshot", "e2", 0), 1]


def test_the_epoch_it_is_in_already_changes_nothing_unless_changes_went_missing():
    sub = subscription()
    sub.offer(change(1, epoch="e2"))
    assert sub.epoch_started("e2", 1) == []
    assert sub.epoch_started("e2", 0) == []
    gap = the_request(sub.epoch_started("e2", 3))  # 2 and 3 were sent before it, never came
    assert gap.since == ("e2", 1)


def test_a_plain_subscription_without_a_position_resyncs_unless_the_table_is_new():
    sub = subscription()
    assert frames(sub.epoch_started("e1", 4)) == [("resync", "epoch_changed")]
    assert (sub.epoch, sub.seq) == ("e1", 4)
    assert seqs(sub.offer(change(5))) == [(5, True)]
    fresh = subscription()
    # A table that appeared: its epoch's changes start with its creation.
    assert fresh.epoch_started("e1", 0, since_creation=True) == []
    assert seqs(fresh.offer(change(1))) == [(1, True)]


def test_a_position_announced_again_fills_what_a_full_channel_dropped_and_nothing_else():
    sub = subscription()
    sub.offer(change(1, epoch="e1"))
    # Changes 2 and 3 were dropped (the consumer's channel was full); the table went quiet.
    gap = the_request(sub.epoch_started("e1", 3, again=True))
    assert gap.since == ("e1", 1)
    assert sub.epoch_started("e1", 3, again=True) == []  # the request in flight decides
    caught_up = subscription()
    caught_up.offer(change(3, epoch="e1"))
    assert caught_up.epoch_started("e1", 3, again=True) == []
    # Nothing delivered yet: a plain subscription starts where it joins, no resync.
    assert subscription().epoch_started("e1", 3, again=True) == []


def test_a_table_that_did_not_exist_when_subscribed_misses_nothing_of_its_first_epoch():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    sub.sync_answered(
        answer(request.request_id, None, 0, snapshot={"documents": [], "truncated": False})
    )
    assert sub.epoch_started("e1", 0, since_creation=True) == []
    assert (sub.epoch, sub.seq) == ("e1", 0)
    assert seqs(sub.offer(change(1))) == [(1, True)]
    # Its first changes announced before the epoch began and not seen: filled from its start.
    late = subscription(snapshot=True)
    request = the_request(late.start())
    late.sync_answered(
        answer(request.request_id, None, 0, snapshot={"documents": [], "truncated": False})
    )
    fill = the_request(late.epoch_started("e1", 2, since_creation=True))
    assert fill.since == ("e1", 0)
    # A table that was there but followed by nobody: what it had is unknown, resync.
    known = subscription(snapshot=True)
    request = the_request(known.start())
    known.sync_answered(
        answer(request.request_id, None, 0, snapshot={"documents": [], "truncated": False})
    )
    actions = known.epoch_started("e1", 3)
    assert frames(actions) == [("resync", "epoch_changed")]
    assert the_request(actions).snapshot


def test_an_epoch_that_begins_while_a_sync_is_in_flight_is_decided_after_its_answer():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    assert sub.epoch_started("e2", 0) == []  # held, in order with the changes
    assert sub.offer(change(1, epoch="e2")) == []
    # Answered from the old epoch: then the new one is a resync, then its changes.
    healed = sub.sync_answered(answer(request.request_id, "e1", 3, changes=[change(2), change(3)]))
    assert frames(healed) == [2, 3, ("resync", "epoch_changed"), 1]
    assert (sub.epoch, sub.seq, sub.held) == ("e2", 1, [])


def test_an_answer_from_the_new_epoch_already_covers_it():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    assert sub.epoch_started("e2", 0) == []  # held: the snapshot is on its way
    actions = sub.sync_answered(
        answer(request.request_id, "e2", 2, snapshot={"documents": [], "truncated": False})
    )
    assert frames(actions) == [("snapshot", "e2", 2)] and requests(actions) == []


def test_a_sync_timing_out_over_a_held_epoch_is_one_resync():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    sub.epoch_started("e2", 0)
    actions = sub.timed_out(request.request_id)
    assert frames(actions) == [("resync", "unavailable"), 3]  # one resync: the reload covers it
    assert (sub.epoch, sub.seq) == ("e2", 0)


# Bounded sync traffic (issue 14, item 6): resends back off, timers are cancelled,
# answers come in pages.


def resends(actions: list[Action]) -> list[float]:
    return [a.delay for a in actions if isinstance(a, RetrySyncLater)]


def test_resends_back_off_with_jitter_until_the_timeout():
    sub = subscription(sync_timeout=60.0)
    sub.offer(change(1))
    actions = sub.offer(change(3))
    request = the_request(actions)
    planned = resends(actions)
    while True:  # each resend, when it fires, plans the next one
        again = sub.retry_due(request.request_id)
        assert requests(again) == [request]
        if not resends(again):
            break
        planned += resends(again)
    assert len(planned) >= 4  # not one every 2 s: 60 s would have been 29
    assert len(planned) < 60 / SYNC_RESEND - 1
    for index, delay in enumerate(planned):
        base = min(SYNC_RESEND * 2**index, SYNC_RESEND_MAX)
        assert base * JITTER[0] <= delay <= base * JITTER[1]
    assert sum(planned) < 60.0  # none after the timeout
    assert len(set(planned)) == len(planned)  # jitter: subscriptions do not resend in waves


def test_an_answer_cancels_the_timers_of_its_request():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(3)))
    actions = sub.sync_answered(answer(request.request_id, "e1", 3, changes=[change(2), change(3)]))
    assert [a for a in actions if isinstance(a, CancelTimers)] == [CancelTimers(request.request_id)]
    timed_out = subscription()
    timed_out.offer(change(1))
    request = the_request(timed_out.offer(change(3)))
    assert CancelTimers(request.request_id) in timed_out.timed_out(request.request_id)


def paged(request_id: str, epoch: str, seq: int, pages: list[dict[str, Any]]) -> list[dict]:
    return [
        answer(request_id, epoch, seq, part=index, last=index == len(pages) - 1, **page)
        for index, page in enumerate(pages)
    ]


def test_an_answer_in_pages_is_put_back_together():
    sub = subscription(snapshot=True)
    request = the_request(sub.start())
    pages = paged(
        request.request_id,
        "e1",
        7,
        [
            {"snapshot": {"documents": [{"id": 1}, {"id": 2}], "truncated": False}},
            {"snapshot": {"documents": [{"id": 3}], "truncated": False}},
            {"snapshot": {"documents": [{"id": 4}], "truncated": False}},
        ],
    )
    assert sub.sync_answered(pages[0]) == [] and sub.sync_answered(pages[1]) == []
    assert sub.offer(change(8)) == []  # held until the whole answer is there
    actions = sub.sync_answered(pages[2])
    assert Snapshot([{"id": n} for n in (1, 2, 3, 4)], False, "e1", 7) in actions
    assert frames(actions) == [("snapshot", "e1", 7), 8]
    assert CancelTimers(request.request_id) in actions


def test_changes_in_pages_are_replayed_in_order():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(5)))
    pages = paged(
        request.request_id,
        "e1",
        5,
        [{"changes": [change(2), change(3)]}, {"changes": [change(4)]}, {"changes": [change(5)]}],
    )
    assert [sub.sync_answered(page) for page in pages[:2]] == [[], []]
    assert seqs(sub.sync_answered(pages[2])) == [(2, False), (3, False), (4, False), (5, False)]


def test_an_answer_missing_a_page_waits_for_the_resend():
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(5)))
    pages = paged(
        request.request_id,
        "e1",
        5,
        [{"changes": [change(2), change(3)]}, {"changes": [change(4)]}, {"changes": [change(5)]}],
    )
    assert sub.sync_answered(pages[0]) == []
    assert sub.sync_answered(pages[2]) == []  # page 1 was lost: nothing delivered
    assert sub.pending == request.request_id
    assert requests(sub.retry_due(request.request_id)) == [request]
    for page in pages[:2]:
        assert sub.sync_answered(page) == []
    assert seqs(sub.sync_answered(pages[2])) == [(2, False), (3, False), (4, False), (5, False)]


def test_the_pages_of_two_answers_to_one_request_do_not_spoil_each_other():
    """A resend got a second answer while the first was on its way: their pages
    arrive interleaved; the first complete answer counts."""
    sub = subscription()
    sub.offer(change(1))
    request = the_request(sub.offer(change(5)))
    first = paged(
        request.request_id, "e1", 4, [{"changes": [change(2), change(3)]}, {"changes": [change(4)]}]
    )
    second = paged(
        request.request_id,
        "e1",
        5,
        [{"changes": [change(2), change(3)]}, {"changes": [change(4), change(5)]}],
    )
    assert sub.sync_answered(first[0]) == [] and sub.sync_answered(second[0]) == []
    assert seqs(sub.sync_answered(first[1])) == [(2, False), (3, False), (4, False), (5, True)]
    assert sub.sync_answered(second[1]) == []  # answered already


def test_late_changes_of_an_epoch_left_bring_no_more_resyncs():
    """Issue 14, case 14: after a Redis restart a subscription got three identical
    resyncs at once. Its sync answer moved it to the new epoch; then the changes it
    had held, some of them late ones of the old epoch, were each taken for a new
    epoch: one more resync for the old one, and one more for the new one after it."""
    sub = subscription()
    for seq in (1, 2):
        sub.offer(change(seq))
    request = the_request(sub.layer_recovered())
    sub.offer(change(3))  # sent before the feed restarted, delivered late
    for seq in (1, 2):
        sub.offer(change(seq, "e2"))
    sub.offer(change(4))  # later still
    actions = sub.sync_answered(answer(request.request_id, "e2", 0, resync="epoch_changed"))
    assert frames(actions) == [("resync", "epoch_changed"), 1, 2]
    assert (sub.epoch, sub.seq) == ("e2", 2)
    assert sub.offer(change(5)) == []  # and so are the next ones of the old epoch
    assert sub.take_batch([change(6), change(7)]) is False
    assert frames(sub.offer(change(3, "e2"))) == [3]


def test_a_late_announcement_of_an_epoch_left_brings_no_resync():
    """A ``changeflow.epoch`` of an epoch the subscription has left (the old holder's
    position announced again after a failover, or a re-announcement queued behind
    the new epoch's changes) is as stale as that epoch's late changes: it must not
    move the subscription back, nor bring a resync for it and another after it."""
    sub = subscription()
    sub.offer(change(1))
    assert frames(sub.epoch_started("e2", 0)) == [("resync", "epoch_changed")]
    assert frames(sub.offer(change(1, "e2"))) == [1]
    assert sub.epoch_started("e1", 4, again=True) == []
    assert sub.epoch_started("e1", 4) == []
    assert (sub.epoch, sub.seq) == ("e2", 1)
    assert frames(sub.offer(change(2, "e2"))) == [2]
    assert sub.offer(change(2)) == []  # and a late change of it: no second resync
