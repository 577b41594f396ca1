"""Pushes written in rounds (push_batches): grouping, one answer per push, and a
group's insert under faults, against a RethinkDB of the test's own."""

from __future__ import annotations

import asyncio
import logging

from changeflow_channels.pushes import PushRequest, parse_push
from changeflow_channels.worker.push_batches import write_round
from changeflow_channels.worker.push_plan import Received, learn_primary_keys, plan, receive
from changeflow_channels.worker.push_writer import PushWriter

from .test_push_writer import ANSWER_LOST, make_writer, stored, stored_while_frozen, wait_until

MAX_BYTES = 1 << 20


def message(table: str, data, **fields) -> dict:
    return {"type": "changeflow.push", "database": "d", "table": table, "data": data, **fields}


async def keyed_writer(url: str, deadline: float = 10.0) -> PushWriter:
    """A writer that knows the primary key of d.t and d.u (the worker learns it
    from RethinkDB's table config when it follows the table)."""
    writer = make_writer(url, deadline)
    for table in ("t", "u"):
        writer.tables.remember("d", table, "id")
    return writer


def make_push(table: str, data) -> PushRequest:
    return parse_push(message(table, data))


def received(writer: PushWriter, messages: list[dict], senders: int = 0) -> list[Received]:
    """``messages`` received; with ``senders``, the i-th sent by sender i % senders
    (its reply channel), else all by one sender without a reply channel."""
    if senders:
        messages = [{**m, "reply_channel": f"reply.{i % senders}"} for i, m in enumerate(messages)]
    return [receive(m, writer, MAX_BYTES) for m in messages]


async def test_a_group_holds_one_push_per_sender_so_each_senders_order_holds(faulty_rethinkdb):
    # RethinkDB writes the documents of one insert in no particular order: a
    # sender's second push waits for the next group.
    writer = await keyed_writer(faulty_rethinkdb.url)
    items = received(writer, [message("t", {"n": n}) for n in range(7)], senders=3)
    groups = [[items.index(item) for item in group.items] for group in plan(items)]
    assert groups == [[0, 1, 2], [3, 4, 5], [6]]
    alone = received(writer, [message("t", {"n": n}) for n in range(3)])  # no reply channel
    assert [len(group.items) for group in plan(alone)] == [1, 1, 1]


def check_answers(items: list[Received], docs: list[dict]) -> None:
    """Every push inserted exactly its documents, under the keys it was answered with."""
    by_key = {doc["id"]: doc for doc in docs}
    for item in items:
        result = item.result
        data = item.message["data"]
        sent = data if isinstance(data, list) else [data]
        assert result is not None and result["ok"] is True, result
        assert result["inserted"] == len(sent), result
        assert result["unchanged"] == result["replaced"] == result["errors"] == 0, result
        mine = [
            {k: v for k, v in by_key[key].items() if k != "id"} for key in result["generated_keys"]
        ]
        assert mine == sent
    assert len(docs) == sum(len(item.result["generated_keys"]) for item in items)


async def test_plan_groups_a_tables_inserts_and_keeps_each_tables_order(faulty_rethinkdb):
    writer = await keyed_writer(faulty_rethinkdb.url)
    items = received(
        writer,
        [
            message("t", {"n": 0}),  # 0: group t
            message("u", {"n": 1}),  # 1: group u
            message("t", [{"n": 2}, {"n": 3}]),  # 2: group t
            message("t", {"id": "own", "n": 4}),  # 3: its own key: alone, closes group t
            message("t", {"n": 5}),  # 4: a new group t, after 3
            message("u", {"n": 6}, op="upsert"),  # 5: alone, closes group u
            message("u", {"n": 7}),  # 6: a new group u
            message("x", {"n": 8}),  # 7: primary key not known yet: alone
            message("t", "not a document"),  # 8: refused, nothing to write
            {"type": "changeflow.unknown", "id": 9},  # 9: refused
            message("t", {"n": 10}),  # 10: joins the group of 4
        ],
        senders=11,
    )
    groups = [[items.index(item) for item in group.items] for group in plan(items)]
    assert groups == [[0, 2], [1], [3], [4, 10], [5], [6], [7]]
    assert items[8].result["error"].startswith("data must be an object")
    assert items[9].result["error"] == "unknown message type 'changeflow.unknown'"


async def test_a_round_answers_each_push_with_its_own_counts_and_keys(faulty_rethinkdb):
    writer = await keyed_writer(faulty_rethinkdb.url)
    assert (await writer.write(make_push("t", {"n": -1})))["ok"]  # the table exists
    batch = [message("t", {"n": n}, id=n) for n in range(40)]
    batch[7] = message("t", [{"n": 7}, {"n": 7.5}], id=7)
    items = received(writer, batch, senders=40)
    assert len(plan(items)) == 1  # one insert query for all forty
    await write_round(writer, items)
    assert [item.result["id"] for item in items] == list(range(40))
    check_answers(items, [doc for doc in stored(faulty_rethinkdb) if doc["n"] != -1])


async def test_bad_and_duplicate_pushes_in_a_round_do_not_touch_their_neighbours(faulty_rethinkdb):
    writer = await keyed_writer(faulty_rethinkdb.url)
    assert (await writer.write(make_push("t", {"id": "dup", "n": -1})))["ok"]
    batch = [message("t", {"n": n}, id=n) for n in range(30)]
    batch[10] = message("t", {"id": "dup", "n": 10}, id=10)  # a duplicate key
    batch[20] = message("t", {"n": float("nan")}, id=20)  # not JSON
    items = received(writer, batch, senders=len(batch))
    await write_round(writer, items)
    assert "Duplicate primary key" in items[10].result["error"]
    assert items[10].result["ok"] is False and items[10].result["id"] == 10
    assert "JSON cannot carry" in items[20].result["error"]
    good = [item for n, item in enumerate(items) if n not in (10, 20)]
    check_answers(good, [doc for doc in stored(faulty_rethinkdb) if doc["id"] != "dup"])


@ANSWER_LOST
async def test_a_group_whose_answer_is_lost_is_written_once(faulty_rethinkdb):
    writer = await keyed_writer(faulty_rethinkdb.url)
    assert (await writer.write(make_push("t", {"n": -1})))["ok"]
    items = received(writer, [message("t", {"n": n}) for n in range(25)], senders=25)
    faulty_rethinkdb.freeze()  # the server still writes, but answers nothing
    task = asyncio.ensure_future(write_round(writer, items))
    await wait_until(lambda: len(stored_while_frozen(faulty_rethinkdb)) == 26)
    faulty_rethinkdb.drop_connections()  # the answer is lost with the connection
    faulty_rethinkdb.thaw()
    await asyncio.wait_for(task, 20)
    # Each push recognised its documents of the group's attempt: inserted, once.
    check_answers(items, [doc for doc in stored(faulty_rethinkdb) if doc["n"] != -1])


async def test_a_group_sent_while_rethinkdb_is_down_is_written_once_it_is_back(
    faulty_rethinkdb, caplog
):
    writer = await keyed_writer(faulty_rethinkdb.url)
    assert (await writer.write(make_push("t", {"n": -1})))["ok"]
    items = received(writer, [message("t", {"n": n}) for n in range(25)], senders=25)
    faulty_rethinkdb.stop()
    with caplog.at_level(logging.WARNING, logger="changeflow_channels"):
        task = asyncio.ensure_future(write_round(writer, items))
        await wait_until(lambda: "retrying push" in caplog.text)
    faulty_rethinkdb.start()
    await asyncio.wait_for(task, 20)
    check_answers(items, [doc for doc in stored(faulty_rethinkdb) if doc["n"] != -1])


async def test_a_tables_unknown_primary_key_is_looked_up_for_a_group(faulty_rethinkdb):
    writer = make_writer(faulty_rethinkdb.url)  # knows no primary key yet
    assert (await writer.write(make_push("t", {"n": -1})))["ok"]  # creates d.t
    items = received(writer, [message("t", {"n": n}) for n in range(10)], senders=10)
    assert len(plan(items)) == 10  # the key guessed ("id") is not trusted for a group
    items = await learn_primary_keys(writer, items, MAX_BYTES)
    assert len(plan(items)) == 1
    await write_round(writer, items)
    check_answers(items, [doc for doc in stored(faulty_rethinkdb) if doc["n"] != -1])
