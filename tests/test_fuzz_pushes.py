"""Hostile pushes on the worker's side (hypothesis): validation, size, and the consumer.

- ``parse_push`` either returns a ``PushRequest`` or raises ``PushError``, for any
  dict; what it accepts is plain JSON that RethinkDB's driver and Redis can encode,
  without ``$reql_type$`` anywhere, under valid names.
- ``check_size`` refuses exactly the data over the limit, with ``PushTooLarge``.
- The worker's push path (in-process, a real ``Flow`` whose RethinkDB is
  unreachable) answers every push exactly once, with the validation error for a
  refused one.
- The real worker answers hostile pushes with ``ok: false`` and stays up: that
  one is in ``tests/bridge/test_fuzz_worker.py`` (it needs the bridge fixtures).
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest
from channels.layers import get_channel_layer
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeflow_channels.conf import get_settings
from changeflow_channels.pushes import (
    OPS,
    PUSH_TYPE,
    RESULT_TYPE,
    PushError,
    PushRequest,
    PushTooLarge,
    check_size,
    parse_push,
)
from changeflow_channels.worker import push_batches
from changeflow_channels.worker.flow import Flow
from changeflow_channels.worker.runner import ChangeflowWorker

from .fuzzing import json_values, names, plain_documents, strict_json

# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
pytestmark = pytest.mark.django_db

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
# One consumer for all the examples of a test: it must survive every one of them.
SHARED = [*HEALTH, HealthCheck.function_scoped_fixture]

# -- values a Python sender (or a Redis message) can carry ----------------------

python_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    st.text(),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2),  # lone surrogates
    st.binary(max_size=8),
    st.datetimes(),
    st.decimals(allow_nan=True),
    st.just(object()),
    st.just(b"\xff"),
    st.just(1 + 2j),
)
python_keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["$reql_type$", "id", ""]),
    st.integers(-2, 2),
    st.none(),
    st.tuples(st.integers(0, 2)),
    st.binary(max_size=3),
)
python_values = st.recursive(
    st.one_of(python_scalars, json_values),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.sets(st.integers(0, 3), max_size=3),
        st.dictionaries(python_keys, children, max_size=4),
    ),
    max_leaves=20,
)
hostile_names = st.one_of(
    names,
    st.sampled_from(["db", "t", "a-b_C9"]),
    st.text(max_size=110),
    st.sampled_from(["a.b", "a/b", "", " ", "ä", "a\n", "rethinkdb", "t" * 98, "t" * 99]),
    python_values,
)
messages = st.fixed_dictionaries(
    # None stands for a missing field: parse_push reads them with .get().
    {
        "type": st.one_of(st.just(PUSH_TYPE), python_values),
        "database": hostile_names,
        "table": hostile_names,
    },
    optional={
        "data": st.one_of(
            plain_documents,
            st.lists(plain_documents, max_size=3),
            st.dictionaries(st.text(max_size=4), json_values, max_size=3),
            python_values,
        ),
        "op": st.one_of(st.sampled_from(OPS), python_values),
        "key": python_values,
        "reply_channel": st.one_of(st.text(max_size=10), python_values),
        "id": python_values,
    },
).flatmap(
    lambda message: st.dictionaries(python_keys, python_values, max_size=2).map(
        lambda extra: {**extra, **message}
    )
)


def reql_type_anywhere(value: Any) -> bool:
    if isinstance(value, dict):
        return "$reql_type$" in value or any(reql_type_anywhere(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(reql_type_anywhere(item) for item in value)
    return False


def assert_plain_json(value: Any, what: str) -> None:
    """JSON a browser, RethinkDB's driver and Redis all accept."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")  # no lone surrogates
    assert strict_json(text) == value, f"{what} changes through JSON"
    assert not reql_type_anywhere(value), f"{what} carries a $reql_type$ key"
    msgpack.packb(value, use_bin_type=True)  # what channels_redis sends


@settings(max_examples=600, deadline=None, suppress_health_check=HEALTH)
@given(messages)
def test_parse_push_accepts_only_plain_json_under_valid_names(message: dict[Any, Any]) -> None:
    try:
        request = parse_push(message)
    except PushError as error:
        assert str(error)
        return
    assert isinstance(request, PushRequest)
    assert NAME_RE.fullmatch(request.database) and NAME_RE.fullmatch(request.table)
    assert len(request.stream) < 100
    assert request.op in OPS
    assert request.reply_channel is None or (
        isinstance(request.reply_channel, str) and request.reply_channel
    )
    for what in ("data", "key", "id"):
        assert_plain_json(getattr(request, what), what)
    assert all(isinstance(document, dict) for document in request.documents) or (
        request.op == "delete"
    )


valid_envelopes = st.fixed_dictionaries(
    {
        "type": st.just(PUSH_TYPE),
        "database": names,
        "table": names,
        "data": st.one_of(
            st.dictionaries(st.text(max_size=4), json_values, max_size=4),
            st.lists(st.dictionaries(st.text(max_size=4), json_values, max_size=3), max_size=3),
        ),
        "op": st.sampled_from(OPS),
    },
    optional={"key": json_values, "id": json_values},
)


@settings(max_examples=400, deadline=None, suppress_health_check=HEALTH)
@given(valid_envelopes)
def test_parse_push_checks_every_value_of_a_well_addressed_push(message: dict[str, Any]) -> None:
    """Valid names and op, hostile documents, keys and ids (``$reql_type$``, lone
    surrogates, huge numbers...): what is accepted is plain JSON."""
    try:
        request = parse_push(message)
    except PushError:
        return
    for what in ("data", "key", "id"):
        assert_plain_json(getattr(request, what), what)


def test_parse_push_refuses_cycles_and_very_deep_values() -> None:
    cyclic: dict[str, Any] = {"a": 1}
    cyclic["self"] = cyclic
    deep: Any = {"x": 1}
    for _ in range(10_000):
        deep = {"x": deep}
    for data in (cyclic, deep, [deep]):
        with pytest.raises(PushError, match="nested deeper"):
            parse_push({"database": "db", "table": "t", "data": data})
    with pytest.raises(PushError, match="nested deeper"):
        parse_push({"database": "db", "table": "t", "data": {"a": 1}, "id": deep})


@pytest.mark.parametrize(
    "data",
    [
        {"x": float("nan")},
        {"x": [float("inf")]},
        {"x": datetime.datetime(2020, 1, 1)},
        {"x": decimal.Decimal("1.5")},
        {"x": b"bytes"},
        {"x": {1, 2}},
        {"x": (1, 2)},
        {1: "int key"},
        {("a",): "tuple key"},
        {"a": [{"b": {"$reql_type$": "TIME", "epoch_time": 0, "timezone": "Z"}}]},
        {"x": "\ud800"},  # a lone surrogate: no UTF-8 for it
        {"\udc00": 1},
        # Beyond 64 bits: Redis (msgpack) cannot carry it, nor a double hold it exactly.
        {"x": 10**20},
    ],
)
def test_parse_push_refuses_what_is_not_plain_json(data: Any) -> None:
    with pytest.raises(PushError):
        parse_push({"database": "db", "table": "t", "data": data})


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(data=st.one_of(plain_documents, json_values.filter(lambda v: "NaN" not in repr(v))))
def test_check_size_refuses_exactly_what_is_over_the_limit(data: Any) -> None:
    try:
        parse_push({"database": "db", "table": "t", "data": data, "op": "delete"})
    except PushError:
        return  # check_size runs on accepted pushes only
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    check_size(data, size)
    with pytest.raises(PushTooLarge):
        check_size(data, size - 1)
    assert issubclass(PushTooLarge, PushError)


def test_check_size_counts_utf8_bytes_not_characters() -> None:
    data = {"s": "😀" * 10}  # 10 characters, 40 bytes: 48 bytes of JSON
    check_size(data, 48)
    with pytest.raises(PushTooLarge, match="48 bytes"):
        check_size(data, 47)


# -- the worker's push path in-process --------------------------------------------


@pytest.fixture
async def push_consumer() -> AsyncIterator[tuple[ChangeflowWorker, Any]]:
    """The worker (not started: what its listeners do with each message received) with
    a real Flow whose RethinkDB is unreachable: a push that passes validation is
    answered "RethinkDB unavailable"."""
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CHANGEFLOW_RETHINKDB="rethinkdb://admin@127.0.0.1:1",
        CHANGEFLOW_PUSH_TIMEOUT=0.05,
    ):
        layer = get_channel_layer()
        worker = ChangeflowWorker("changeflow", layer, Flow(get_settings(), layer, []))
        yield worker, layer
        worker.pipeline.close()


async def answers(layer: Any, channel: str, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


MARKER = {"type": PUSH_TYPE, "database": "db", "table": "t", "data": "not a document"}


@settings(max_examples=150, deadline=None, suppress_health_check=SHARED)
@given(message=messages.filter(lambda m: m.get("type") != "changeflow.sync"))
async def test_push_consumer_answers_every_message_exactly_once(push_consumer, message) -> None:
    worker, layer = push_consumer
    reply = await layer.new_channel()
    await worker.take({**message, "reply_channel": reply, "id": "hostile"})
    # Pushes are handled one at a time, in order: the marker's answer comes next.
    await worker.take({**MARKER, "reply_channel": reply, "id": "marker"})
    first, second = await answers(layer, reply, 2)
    assert (first["type"], first["id"], first["ok"]) == (RESULT_TYPE, "hostile", False), first
    assert isinstance(first["error"], str) and first["error"]
    assert (second["id"], second["ok"]) == ("marker", False), second
    if message.get("type") == PUSH_TYPE:
        try:
            parse_push({**message, "reply_channel": reply, "id": "hostile"})
        except PushError as error:
            assert first["error"] == str(error)
        else:
            assert first["error"].startswith(("RethinkDB unavailable", "data is")), first
    elif message.get("type"):
        assert "unknown message type" in first["error"]
    else:
        assert "message has no type" in first["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=SHARED)
@given(reply_channel=st.one_of(st.text(max_size=120), python_values))
async def test_a_bad_reply_channel_never_stops_the_push_consumer(
    push_consumer, reply_channel
) -> None:
    worker, layer = push_consumer
    await worker.take({**MARKER, "reply_channel": reply_channel})
    reply = await layer.new_channel()
    await worker.take({**MARKER, "reply_channel": reply, "id": "after"})
    [answer] = await answers(layer, reply, 1)
    assert answer["id"] == "after" and answer["ok"] is False


async def test_a_lone_surrogate_push_is_answered_by_the_push_consumer(push_consumer) -> None:
    """Through the in-memory layer (one process, as ``demo/run.py --no-redis``) such
    a push reaches the worker; it must be refused with an answer, not dropped."""
    worker, layer = push_consumer
    reply = await layer.new_channel()
    message = {**MARKER, "data": {"x": "\ud800"}, "reply_channel": reply, "id": "s"}
    await worker.take(message)
    await worker.take({**MARKER, "reply_channel": reply, "id": "marker"})
    first, second = await answers(layer, reply, 2)
    assert (first["id"], first["ok"]) == ("s", False), first
    assert second["id"] == "marker"


# The same hostile pushes through the real worker: tests/bridge/test_fuzz_worker.py


async def test_a_bug_while_writing_a_round_still_answers_each_of_its_pushes(
    push_consumer, monkeypatch
) -> None:
    worker, layer = push_consumer

    async def buggy(writer: Any, items: Any) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(push_batches, "write_round", buggy)
    reply = await layer.new_channel()
    for n in range(3):
        await worker.take({**MARKER, "data": {"n": n}, "reply_channel": reply, "id": n})
    got = await answers(layer, reply, 3)
    assert [(a["id"], a["ok"], a["code"]) for a in got] == [
        (n, False, "unavailable") for n in range(3)
    ]
    assert all("a bug of ours" in a["error"] for a in got)
