"""Issue 15, item 1: writes under row rules. Alice may push into ``secdb.*``; bob's rows
are hidden from her by the ``OwnOrders`` row rule. Whatever she pushes, she learns
nothing of bob's row (not its content, not whether it exists) and changes nothing of
it; her own rows she may write as before."""

from __future__ import annotations

import pytest

from .writes import ATTACKS, SECRET, bobs_row, fill, leaks, pushed, stored


async def test_a_hidden_row_does_not_leak_through_a_duplicate_key(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    await push(table, bobs_row(bob.name))
    client = await connect(user=alice)
    answer = await pushed(client, f"secdb.{table}", {"id": "b1", "owner": alice.name})
    assert answer["event"] == "error" and not leaks(answer), answer
    assert answer["message"] == 'Duplicate primary key `id`: "b1"'
    # several documents: the same, and the others are written
    docs = [{"id": "a1", "owner": alice.name}, {"id": "b1", "owner": alice.name}]
    answer = await pushed(client, f"secdb.{table}", docs)
    assert answer["event"] == "error" and not leaks(answer), answer
    assert stored(site, table, "a1") == docs[0]
    assert stored(site, table, "b1")["secret"] == SECRET


@pytest.mark.parametrize(("name", "op", "data", "fields"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_a_hidden_row_and_a_missing_one_get_the_same_refusal(
    site, make_user, connect, table, push, name, op, data, fields
):
    alice, bob = make_user(), make_user()
    await push(table, bobs_row(bob.name))
    client = await connect(user=alice)
    stream = f"secdb.{table}"
    answers = {}
    for key in ("b1", "nope"):
        answers[key] = await pushed(
            client, stream, fill(data, key, alice.name), op=op, **fill(fields, key, alice.name)
        )
    assert answers["b1"] == answers["nope"], answers  # no existence probe
    assert answers["b1"]["event"] == "error" and answers["b1"]["code"] == "forbidden"
    assert not leaks(answers)
    # bob's row is untouched (not taken over, not deleted), and nothing was created
    assert stored(site, table, "b1") == bobs_row(bob.name)
    assert stored(site, table, "nope") is None


async def test_a_hidden_row_never_reaches_the_attacker_through_her_subscription(
    site, make_user, connect, table, push
):
    alice, bob = make_user(), make_user()
    await push(table, bobs_row(bob.name))
    client = await connect(user=alice)
    stream = f"secdb.{table}"
    await client.subscribe(stream)
    for _, op, data, fields in ATTACKS:
        answer = await pushed(
            client, stream, fill(data, "b1", alice.name), op=op, **fill(fields, "b1", alice.name)
        )
        assert answer.get("code") == "forbidden", (op, answer)
    # her own insert is the first change she sees: no take-over came before it
    await pushed(client, stream, {"id": "a1", "owner": alice.name})
    change = await client.wait_for(lambda f: f.get("event") == "change")
    assert change["new_val"] == {"id": "a1", "owner": alice.name}


async def test_a_user_writes_her_own_rows_as_before(site, make_user, connect, table, push):
    alice, bob = make_user(), make_user()
    client = await connect(user=alice)
    stream = f"secdb.{table}"
    mine = {"id": "a1", "owner": alice.name, "n": 1, "nested": {"x": 1, "y": 1}}
    assert (await pushed(client, stream, mine))["inserted"] == 1
    answer = await pushed(client, stream, {"nested": {"y": 2}}, op="update", key="a1")
    assert (answer["event"], answer["replaced"]) == ("pushed", 1), answer
    assert stored(site, table, "a1")["nested"] == {"x": 1, "y": 2}  # merged as RethinkDB does
    answer = await pushed(client, stream, {}, op="update", key="a1")
    assert (answer["event"], answer["unchanged"]) == ("pushed", 1), answer
    answer = await pushed(client, stream, [{"id": "a1", "owner": alice.name, "n": 5}], op="upsert")
    assert (answer["event"], answer["replaced"]) == ("pushed", 1), answer
    answer = await pushed(client, stream, {"owner": alice.name, "n": 6}, op="replace", key="a1")
    assert (answer["event"], answer["replaced"]) == ("pushed", 1), answer
    assert stored(site, table, "a1") == {"id": "a1", "owner": alice.name, "n": 6}
    # but she may not give her row away (bob's row is then hidden from her), nor
    # insert rows for bob
    answer = await pushed(client, stream, {"owner": bob.name}, op="update", key="a1")
    assert answer["code"] == "forbidden", answer
    answer = await pushed(client, stream, {"id": "a2", "owner": bob.name})
    assert answer["code"] == "forbidden", answer
    assert stored(site, table, "a2") is None
    answer = await pushed(client, stream, None, op="delete", key="a1")
    assert (answer["event"], answer["deleted"]) == ("pushed", 1), answer
    assert stored(site, table, "a1") is None


async def test_a_retried_checked_push_gets_its_first_answer(site, make_user, connect, table, push):
    """A delete retried with its idempotency key finds the row gone, which a row rule
    refuses as if hidden: the worker's record answers it instead, as the first time."""
    alice = make_user()
    client = await connect(user=alice)
    stream = f"secdb.{table}"
    await pushed(client, stream, {"id": "a1", "owner": alice.name})
    first = await pushed(client, stream, None, op="delete", key="a1", idempotency_key="del-a1")
    again = await pushed(client, stream, None, op="delete", key="a1", idempotency_key="del-a1")
    assert (first["event"], first["deleted"]) == ("pushed", 1), first
    assert again == first
    # without the key, the same delete is refused like any missing row
    answer = await pushed(client, stream, None, op="delete", key="a1")
    assert answer["code"] == "forbidden"
