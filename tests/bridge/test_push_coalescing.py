"""Pushes of one process sent together (push_coalescer.py, ``changeflow.push.batch``)
through the real worker: each push answered with its own counts, keyed pushes
written once, a sender's pushes into a table written in order; 100 websocket
connections pushing at once through one Daphne, each answered on its own."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import pytest
from channels.exceptions import ChannelFull

from changeflow_channels import apush_to_flow
from changeflow_channels.push_coalescer import coalescer_for

from .test_push_bursts import read_table

pytestmark = pytest.mark.usefixtures("worker")

TASKS = 8
PER_TASK = 200
CONNECTIONS = 100
PER_CONNECTION = 10  # 1,000 pushes at once: ten times the worker channel's capacity


async def test_8_tasks_of_200_pushes_each_answered_with_its_own_counts_keyed_once(
    layer, stream_db, rethinkdb_target, ar
):
    async def task(t: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        answered = []
        for n in range(PER_TASK):
            data = {"t": t, "n": n}
            key = f"k-{t}-{n}" if n % 10 == 0 else None
            answer = await apush_to_flow(
                stream_db, "p", data, id=[t, n], idempotency_key=key, wait=True,
                channel_layer=layer,
            )  # fmt: skip
            assert answer is not None
            answered.append((data, answer))
            if key is not None:  # the same push again: written once, answered as the first
                again = await apush_to_flow(
                    stream_db, "p", data, id=[t, n], idempotency_key=key, wait=True,
                    channel_layer=layer,
                )  # fmt: skip
                assert again is not None
                assert again["generated_keys"] == answer["generated_keys"], (answer, again)
        return answered

    results = await asyncio.wait_for(asyncio.gather(*(task(t) for t in range(TASKS))), 240)
    sent = coalescer_for(layer, "changeflow").sends
    pushes = TASKS * (PER_TASK + PER_TASK // 10)
    assert 0 < sent <= pushes

    docs = {
        doc["id"]: doc
        for doc in await read_table(ar, rethinkdb_target.connect_kwargs(), stream_db, "p")
    }
    assert len(docs) == TASKS * PER_TASK  # the keyed pushes sent twice: written once
    for t, answered in enumerate(results):
        for n, (data, answer) in enumerate(answered):
            assert answer["id"] == [t, n]
            assert answer["ok"] is True
            assert (answer["inserted"], answer["errors"]) == (1, 0), answer
            [key] = answer["generated_keys"]
            assert docs.pop(key) == {"id": key, **data}
    assert docs == {}


async def test_unanswered_pushes_of_concurrent_tasks_keep_each_tasks_order(
    layer, stream_db, rethinkdb_target, ar
):
    """Pushes without a reply channel count as one sender; those of one batch were
    sent at one moment, and may go in one insert; a task's next push is in a later
    batch, written after."""
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    try:
        await ar.db_create(stream_db).run(conn)
        await ar.db(stream_db).table_create("o").run(conn)
        feed = await ar.db(stream_db).table("o").changes().run(conn)

        async def task(t: int) -> None:
            for n in range(PER_TASK):
                while True:
                    try:
                        await apush_to_flow(stream_db, "o", {"t": t, "n": n}, channel_layer=layer)
                        break
                    except ChannelFull:  # the worker's pace: wait for room
                        await asyncio.sleep(0.01)

        await asyncio.wait_for(asyncio.gather(*(task(t) for t in range(TASKS))), 240)
        seen: dict[int, list[int]] = defaultdict(list)
        for _ in range(TASKS * PER_TASK):
            change = await asyncio.wait_for(feed.next(), 30)
            seen[change["new_val"]["t"]].append(change["new_val"]["n"])
    finally:
        await conn.close(noreply_wait=False)
    assert coalescer_for(layer, "changeflow").sends < TASKS * PER_TASK  # sent together
    for t in range(TASKS):
        assert seen[t] == list(range(PER_TASK)), t


async def test_100_connections_pushing_at_once_each_get_their_own_answers(
    ws_connect, stream_db, rethinkdb_target, ar
):
    clients = [await ws_connect() for _ in range(CONNECTIONS)]
    stream = f"{stream_db}.w"
    bad = 37  # its second push is not a document

    async def push_all(c: int) -> list[dict[str, Any]]:
        client = clients[c]
        for n in range(PER_CONNECTION):
            data: Any = "not a document" if (c, n) == (bad, 1) else {"c": c, "n": n}
            await client.send({"action": "push", "stream": stream, "data": data, "id": n})
        return [await client.recv(timeout=60) for _ in range(PER_CONNECTION)]

    answers = await asyncio.wait_for(
        asyncio.gather(*(push_all(c) for c in range(CONNECTIONS))), 120
    )
    keys = set()
    for c, frames in enumerate(answers):
        assert sorted(frame["id"] for frame in frames) == list(range(PER_CONNECTION)), frames
        for frame in frames:
            if (c, frame["id"]) == (bad, 1):
                assert frame["event"] == "error" and frame["code"] == "bad_request", frame
                continue
            assert frame["event"] == "pushed" and frame["inserted"] == 1, frame
            keys.update(frame["generated_keys"])
        # One connection's answers come in the order of its pushes.
        assert [frame["id"] for frame in frames if frame["event"] == "pushed"] == sorted(
            frame["id"] for frame in frames if frame["event"] == "pushed"
        )
    docs = await read_table(ar, rethinkdb_target.connect_kwargs(), stream_db, "w")
    assert len(docs) == len(keys) == CONNECTIONS * PER_CONNECTION - 1
    assert {doc["id"] for doc in docs} == keys
    assert json.dumps(sorted((d["c"], d["n"]) for d in docs)) == json.dumps(
        sorted(
            (c, n) for c in range(CONNECTIONS) for n in range(PER_CONNECTION) if (c, n) != (bad, 1)
        )
    )
