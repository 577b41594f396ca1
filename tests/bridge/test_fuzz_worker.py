"""Hostile pushes through the real worker (Redis, the worker process, RethinkDB).

Each is answered ``ok: false`` with a clear message, and the worker stays up: a
valid push right after is written. The property-based tests of the same
validation are in ``tests/test_fuzz_pushes.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from changeflow_channels.pushes import PUSH_TYPE, RESULT_TYPE

pytestmark = pytest.mark.usefixtures("worker")

DEEP: Any = 1
for _ in range(40):
    DEEP = {"d": DEEP}
HOSTILE_PUSHES = [
    ({"data": {"x": float("nan")}}, "JSON cannot carry"),
    ({"data": {"x": float("-inf")}}, "JSON cannot carry"),
    ({"data": {"x": DEEP}}, "nested deeper"),
    ({"data": [{"ok": 1}, {"a": [{"$reql_type$": "GEOMETRY"}]}]}, "reserved key"),
    ({"data": {"a": 1}, "op": "update", "key": {"$reql_type$": "TIME"}}, "key must be"),
    ({"data": {"a": 1}, "op": "update", "key": [{"$reql_type$": "TIME"}]}, "reserved key"),
    ({"data": {"a": 1}, "id": {"$reql_type$": "BINARY", "data": ""}}, "reserved key"),
    ({"data": {"a": 1}, "op": ["insert"]}, "unknown op"),
    ({"data": {"a": 1}, "table": "t/../x"}, "table name"),
    ({"data": {"a": 1}, "table": "\uff54"}, "table name"),
    ({"data": {"a": 1}, "table": "t" * 100}, "too long"),
    ({"data": {"blob": "x" * (1024 * 1024)}}, "at most 1048576"),  # CHANGEFLOW_MAX_DOCUMENT_BYTES
]


@pytest.mark.parametrize(("fields", "error"), HOSTILE_PUSHES)
async def test_the_worker_answers_hostile_pushes_and_stays_up(
    layer, stream_db, fields, error
) -> None:
    reply = await layer.new_channel()
    message = {
        "type": PUSH_TYPE,
        "database": stream_db,
        "table": "t",
        "reply_channel": reply,
        "id": "hostile",
        **fields,
    }
    await layer.send("changeflow", message)
    answer = await asyncio.wait_for(layer.receive(reply), 10)
    assert (answer["type"], answer["ok"]) == (RESULT_TYPE, False), answer
    assert error in answer["error"], answer
    if not isinstance(fields.get("id"), dict):
        assert answer["id"] == "hostile"
    good = {"type": PUSH_TYPE, "database": stream_db, "table": "t", "data": {"n": 1}}
    await layer.send("changeflow", {**good, "reply_channel": reply, "id": "good"})
    answer = await asyncio.wait_for(layer.receive(reply), 10)
    assert (answer["id"], answer["ok"], answer["inserted"]) == ("good", True, 1), answer


async def test_the_worker_survives_a_message_redis_cannot_decode(layer, stream_db) -> None:
    """msgpack packs integer map keys, but channels_redis unpacks with string keys only:
    such a message cannot even be read back. The worker must go on."""
    reply = await layer.new_channel()
    await layer.send(
        "changeflow",
        {"type": PUSH_TYPE, "database": stream_db, "table": "t", "data": {1: "x"}},
    )
    good = {"type": PUSH_TYPE, "database": stream_db, "table": "t", "data": {"n": 2}}
    await layer.send("changeflow", {**good, "reply_channel": reply, "id": "good"})
    answer = await asyncio.wait_for(layer.receive(reply), 15)
    assert (answer["id"], answer["ok"]) == ("good", True), answer
