"""Checked pushes without I/O: ``RulesPolicy``'s per-op rules and ``can_write``, and
the consumer's state machine (web/push_guard.py) driven by hand-made answers."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.permissions import RulesPolicy, guards_writes, rules_problems
from changeflow_channels.pushes import (
    PUSH_TYPE,
    READ_RESULT_TYPE,
    READ_TYPE,
    RESULT_TYPE,
    new_document,
    parse_push,
)
from changeflow_channels.web.push_guard import MAX_ATTEMPTS, Answer, Check, GuardedPush, Read, Write

ALICE = SimpleNamespace(username="alice", is_authenticated=True, is_staff=False, pk=1)


class OwnRows(RulesPolicy):
    async def filter_change(self, user, stream, change):
        def mine(doc):
            return doc if doc is not None and doc.get("owner") == user.username else None

        return {**change, "old_val": mine(change["old_val"]), "new_val": mine(change["new_val"])}


RULES = {
    "s.t": {"push": "staff", "delete": "nobody", "subscribe": "authenticated"},
    "s.*": {"update": "authenticated"},
    "*": {"push": "authenticated"},
}


def test_the_most_specific_pattern_naming_the_op_or_push_decides():
    policy = RulesPolicy(RULES)
    assert policy.requirement("s.t", "update") == "staff"  # s.t names push: before s.*
    assert policy.requirement("s.t", "delete") == "nobody"  # the op wins within a pattern
    assert policy.requirement("s.u", "update") == "authenticated"
    assert policy.requirement("s.u", "insert") == "authenticated"  # "*"'s push
    assert policy.requirement("s.u", "subscribe") == "nobody"  # push never stands for subscribe


async def test_can_push_asks_the_ops_own_rule():
    policy = RulesPolicy({"s.*": {"push": "authenticated", "delete": "staff"}})
    assert await policy.can_push(ALICE, "s.t", "update")
    assert not await policy.can_push(ALICE, "s.t", "delete")


def test_rules_accept_every_op_as_an_action():
    assert (
        list(rules_problems({"s.*": {op: "staff" for op in ("insert", "upsert", "delete")}})) == []
    )
    assert any("'read'" in problem for problem in rules_problems({"s.*": {"read": "staff"}}))


async def test_under_a_row_rule_a_write_needs_both_sides_visible():
    policy = OwnRows({})
    mine, theirs = {"id": 1, "owner": "alice"}, {"id": 2, "owner": "bob"}
    assert guards_writes(policy) and not guards_writes(RulesPolicy({}))
    assert await policy.can_write(ALICE, "s.t", "update", 1, {**mine, "n": 1}, mine)
    assert await policy.can_write(ALICE, "s.t", "delete", 1, None, mine)
    assert await policy.can_write(ALICE, "s.t", "insert", None, mine, None)
    assert not await policy.can_write(
        ALICE, "s.t", "update", 2, {**theirs, "owner": "alice"}, theirs
    )
    assert not await policy.can_write(ALICE, "s.t", "delete", 2, None, theirs)
    assert not await policy.can_write(ALICE, "s.t", "update", 1, {**mine, "owner": "bob"}, mine)
    assert not await policy.can_write(ALICE, "s.t", "insert", None, theirs, None)
    # writing over a missing document is refused like a hidden one
    for op in ("update", "replace", "delete", "upsert"):
        assert not await policy.can_write(ALICE, "s.t", op, 3, mine, None), op
    # without a row rule, can_push alone decides
    assert await RulesPolicy({}).can_write(ALICE, "s.t", "delete", 2, None, theirs)


def test_new_documents_follow_rethinkdbs_write_semantics():
    old = {"id": 1, "a": {"x": 1, "y": 1}, "b": [1, 2]}
    assert new_document("update", old, {"a": {"y": 2}, "b": [3]}) == {
        "id": 1,
        "a": {"x": 1, "y": 2},
        "b": [3],
    }
    assert new_document("update", None, {"id": 1}) is None  # nothing to update
    assert new_document("upsert", None, {"id": 1, "v": 1}) == {"id": 1, "v": 1}
    assert new_document("upsert", old, {"id": 1, "a": None}) == {"id": 1, "a": None, "b": [1, 2]}
    assert new_document("replace", old, {"id": 1}) == {"id": 1}
    assert new_document("delete", old, None) is None


def guarded(data, **fields):
    message = {
        "database": "s",
        "table": "t",
        "data": data,
        "reply_channel": "me",
        "id": 7,
        **fields,
    }
    return GuardedPush(5, parse_push(message))


def read_answer(*documents, pk="id"):
    return {
        "type": READ_RESULT_TYPE,
        "id": {"guard": 5},
        "ok": True,
        "pk": pk,
        "documents": list(documents),
    }


def test_a_checked_update_reads_checks_and_writes_what_it_checked():
    guard = guarded({"n": 2}, op="update", key="a")
    action = guard.start()
    assert isinstance(action, Read)
    assert action.message == {
        "type": READ_TYPE,
        "database": "s",
        "table": "t",
        "data": {"n": 2},
        "id": {"guard": 5},  # never a client's id (those are strings and numbers)
        "op": "update",
        "key": "a",
        "reply_channel": "me",
    }
    old = {"id": "a", "owner": "alice", "n": 1}
    action = guard.read(read_answer(old))
    assert isinstance(action, Check)
    assert action.documents == [("a", {**old, "n": 2}, old)]
    action = guard.checked(True)
    assert isinstance(action, Write)
    assert action.message["type"] == PUSH_TYPE
    assert action.message["expect"] == [["a", old, {**old, "n": 2}]]
    parse_push(action.message)  # a valid push
    done = guard.result({"type": RESULT_TYPE, "id": {"guard": 5}, "ok": True, "replaced": 1})
    assert isinstance(done, Answer)
    assert done.frame == {
        "event": "pushed",
        "id": 7,
        "ok": True,
        "generated_keys": [],
        "inserted": 0,
        "replaced": 1,
        "unchanged": 0,
        "deleted": 0,
        "skipped": 0,
        "errors": 0,
    }


def test_a_refusal_is_the_same_for_a_hidden_and_a_missing_document():
    frames = []
    for document in ({"id": "b", "owner": "bob"}, None):
        guard = guarded(None, op="delete", key="b")
        guard.start()
        guard.read(read_answer(document))
        action = guard.checked(False)
        assert isinstance(action, Answer)
        frames.append(action.frame)
    assert (
        frames[0]
        == frames[1]
        == {
            "event": "error",
            "code": "forbidden",
            "message": "you may not delete this document in s.t",
            "id": 7,
        }
    )


def test_a_document_changed_between_the_check_and_the_write_is_checked_again():
    # alice's update of her rows a and c; meanwhile c was given to bob (hidden from her)
    guard = guarded([{"id": "a", "n": 1}, {"id": "c", "n": 1}], op="update")
    guard.start()
    mine_a, mine_c = {"id": "a", "owner": "alice"}, {"id": "c", "owner": "alice"}
    check = guard.read(read_answer(mine_a, mine_c))
    assert isinstance(check, Check) and len(check.documents) == 2
    write = guard.checked(True)
    assert isinstance(write, Write)
    # the worker wrote a, and found c changed (not written): conflict on expect[1]
    conflict = {"ok": False, "code": "conflict", "error": "…", "replaced": 1, "conflicts": [1]}
    again = guard.result(conflict)
    assert isinstance(again, Read)
    # the read answers all documents; only c is checked again, as it is now (bob's)
    taken = {"id": "c", "owner": "bob", "secret": "x"}
    check = guard.read(read_answer({**mine_a, "n": 1}, taken))
    assert isinstance(check, Check)
    assert check.documents == [("c", {**taken, "n": 1}, taken)]
    refused = guard.checked(False)  # bob's row: the policy refuses, nothing is written
    assert isinstance(refused, Answer) and refused.frame["code"] == "forbidden"


def test_conflicts_are_tried_a_few_times_then_answered_conflict():
    guard = guarded({"n": 1}, op="update", key="a")
    action = guard.start()
    old = {"id": "a", "owner": "alice"}
    for _ in range(MAX_ATTEMPTS):
        assert isinstance(action, Read)
        guard.read(read_answer(old))
        guard.checked(True)
        action = guard.result(
            {"ok": False, "code": "conflict", "error": "changed", "conflicts": [0]}
        )
    assert isinstance(action, Answer)
    assert (action.frame["code"], action.frame["id"]) == ("conflict", 7)


def test_worker_refusals_and_silence_are_answered_with_codes():
    guard = guarded([{"id": "a"}], op="update")
    guard.start()
    invalid = {"type": READ_RESULT_TYPE, "ok": False, "code": "invalid", "error": "no key"}
    action = guard.read(invalid)
    assert isinstance(action, Answer) and action.frame["code"] == "bad_request"
    guard = guarded({"n": 1}, op="update", key="a")
    guard.start()
    assert guard.timed_out().frame["code"] == "unavailable"
    # documents without their primary key: refused before any write
    guard = guarded([{"n": 1}], op="update")
    guard.start()
    action = guard.read(read_answer(None))
    assert isinstance(action, Answer) and action.frame["code"] == "bad_request"


def test_a_push_written_already_is_answered_as_recorded():
    guard = guarded(None, op="delete", key="a", idempotency_key="k1")
    read = guard.start()
    assert isinstance(read, Read) and read.message["idempotency_key"] == "k1"
    recorded = {"ok": True, "deleted": 1, "generated_keys": []}
    action = guard.read(
        {"type": READ_RESULT_TYPE, "id": {"guard": 5}, "ok": True, "done": recorded}
    )
    assert isinstance(action, Answer)
    assert (action.frame["event"], action.frame["deleted"], action.frame["id"]) == ("pushed", 1, 7)


# -- the consumer's side, with the test playing the worker ------------------------------

LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def worker_receives() -> dict:
    return await asyncio.wait_for(get_channel_layer().receive("changeflow"), 3)


async def worker_answers(request: dict, **answer) -> None:
    await get_channel_layer().send(request["reply_channel"], {"id": request["id"], **answer})


@pytest.mark.django_db
async def test_the_consumer_rechecks_a_document_taken_over_before_its_write():
    policy = OwnRows({"s.*": {"push": "authenticated"}})
    with override_settings(CHANGEFLOW_PERMISSIONS=policy, CHANNEL_LAYERS=LAYER):
        client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        client.scope["user"] = ALICE
        assert (await client.connect())[0]
        push = {"action": "push", "stream": "s.t", "op": "update", "key": "c", "data": {"n": 1}}
        await client.send_json_to({**push, "id": 1})
        read = await worker_receives()
        assert (read["type"], read["key"]) == (READ_TYPE, "c")
        mine = {"id": "c", "owner": "alice"}
        await worker_answers(read, type=READ_RESULT_TYPE, ok=True, pk="id", documents=[mine])
        write = await worker_receives()
        assert (write["type"], write["expect"]) == (PUSH_TYPE, [["c", mine, {**mine, "n": 1}]])
        # meanwhile bob took the row: the worker did not write it
        await worker_answers(write, type=RESULT_TYPE, ok=False, code="conflict", conflicts=[0])
        read = await worker_receives()
        taken = {"id": "c", "owner": "bob", "secret": "x"}
        await worker_answers(read, type=READ_RESULT_TYPE, ok=True, pk="id", documents=[taken])
        answer = await client.receive_json_from(timeout=3)
        assert answer == {
            "event": "error",
            "code": "forbidden",
            "message": "you may not update this document in s.t",
            "id": 1,
        }
        # an own row: written, answered with the worker's counts
        await client.send_json_to({**push, "id": 2})
        read = await worker_receives()
        assert read["type"] == READ_TYPE  # nothing was written after the refusal
        await worker_answers(read, type=READ_RESULT_TYPE, ok=True, pk="id", documents=[mine])
        write = await worker_receives()
        await worker_answers(write, type=RESULT_TYPE, ok=True, replaced=1)
        answer = await client.receive_json_from(timeout=3)
        assert (answer["event"], answer["id"], answer["replaced"]) == ("pushed", 2, 1)
        await client.disconnect()
