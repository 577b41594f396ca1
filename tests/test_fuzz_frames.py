"""Hostile websocket frames against the real consumer, in-process (hypothesis).

Each example opens a connection to ``ChangeflowConsumer`` on a fresh in-memory
channel layer, with ``WorkerStandIn`` playing the worker on its channel, and
sends a handful of frames. Properties:

- every frame gets exactly one answer, which is strict JSON (a browser's
  ``JSON.parse`` must accept it): a success event or an ``error`` with one of
  the documented codes and a message;
- the connection stays open, and nothing is logged as a failure of ours;
- everything the consumer sends to the worker's channel is a push that
  ``parse_push`` accepts or a sync request that ``parse_sync`` accepts (and that
  the production layer, Redis with msgpack, can carry).

Under ``AllowAllPolicy`` and an in-memory layer nothing is forbidden and nothing is
unavailable, so those codes would mean a crash ("the server could not handle this
frame"); the limits are set high enough not to trip except the frame size.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.web.protocol import ACTIONS, valid_request_id

from .fuzzing import (
    ERROR_CODES,
    WorkerStandIn,
    binary_frames,
    frames,
    hostile_streams,
    names,
    plain_documents,
    raw_frames,
    stream_is_valid,
    strict_json,
    to_json,
    valid_streams,
)

# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
pytestmark = pytest.mark.django_db

MAX_FRAME_BYTES = 4096
SETTINGS = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
    "CHANGEFLOW_MAX_FRAME_BYTES": MAX_FRAME_BYTES,
    "CHANGEFLOW_MAX_SUBSCRIPTIONS": 1000,
    "CHANGEFLOW_PUSH_RATE": 10_000.0,
    "CHANGEFLOW_SUBSCRIBE_RATE": 10_000.0,
    "CHANGEFLOW_SYNC_RATE": 10_000.0,
    "CHANGEFLOW_SYNC_BURST": 10_000,
    "CHANGEFLOW_SYNC_TIMEOUT": 600.0,
    "CHANGEFLOW_RECHECK_EVERY": 3600.0,
}
# Below the consumer's abuse threshold (a burst of 50 refused frames).
MAX_FRAMES = 20
SUCCESS = {"subscribe": "subscribed", "unsubscribe": "unsubscribed", "push": "pushed"}
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


class Failures(logging.Handler):
    """Records what the package logs at ERROR: a frame that made it fail."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def failures_logged() -> Iterator[Failures]:
    handler = Failures()
    logger = logging.getLogger("changeflow_channels")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Session:
    """One websocket connection and the worker stand-in behind it."""

    def __init__(self, communicator: WebsocketCommunicator, worker: WorkerStandIn) -> None:
        self.communicator = communicator
        self.worker = worker

    async def answer(self, text: str | None = None, data: bytes | None = None) -> dict[str, Any]:
        """Send one frame and return its answer, checked to be a well-formed frame."""
        # send_input, not send_to: empty frames are frames too.
        message = {"type": "websocket.receive", "text": text, "bytes": data}
        await self.communicator.send_input({k: v for k, v in message.items() if v is not None})
        output = await self.communicator.receive_output(timeout=5)
        sent = text if text is not None else data
        assert output["type"] == "websocket.send", (sent, output)
        assert output.get("text") is not None, (sent, output)
        answer = strict_json(output["text"])  # Infinity / NaN would break the browser
        assert isinstance(answer, dict), (sent, answer)
        if answer.get("event") == "error":
            assert answer["code"] in ERROR_CODES, (sent, answer)
            assert isinstance(answer["message"], str) and answer["message"], (sent, answer)
        else:
            assert answer.get("event") in SUCCESS.values(), (sent, answer)
        return answer


@contextlib.asynccontextmanager
async def session(quiet_after: bool = True, **overrides: Any) -> AsyncIterator[Session]:
    with override_settings(**{**SETTINGS, **overrides}):
        layer = get_channel_layer()
        async with WorkerStandIn(layer) as worker:
            communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
            connected, _ = await communicator.connect()
            assert connected
            try:
                yield Session(communicator, worker)
                if quiet_after:
                    # Exactly one answer per frame: nothing more is on its way.
                    assert await communicator.receive_nothing(timeout=0.02)
            finally:
                await communicator.disconnect()
        assert worker.refused == [], worker.refused


def expected_refusal(text: str | None) -> str | None:
    """The code any answer must carry, when the frame is bad at its envelope."""
    if text is None:
        return "bad_request"  # binary
    if len(text.encode()) > MAX_FRAME_BYTES:
        return "too_large"
    try:
        frame = strict_json(text)
    except (ValueError, RecursionError):
        return "bad_request"
    if not isinstance(frame, dict) or not valid_request_id(frame.get("id")):
        return "bad_request"
    if frame.get("action") not in ACTIONS or not stream_is_valid(frame.get("stream")):
        return "bad_request"
    return None


def echoed_id(text: str) -> Any:
    """The id the answer must echo (None: no id to echo)."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(frame, dict) or not valid_request_id(frame.get("id")):
        return None  # a bad id (not JSON-safe for a browser) is never echoed
    return frame.get("id")


async def check_frame(
    client: Session, text: str | None, data: bytes | None, subscribed: set
) -> dict[str, Any]:
    answer = await client.answer(text, data)
    sent = text if text is not None else data
    # With every permission granted, an in-memory layer and generous limits, these
    # codes can only come from the consumer failing on the frame.
    assert answer.get("code") not in ("unavailable", "forbidden", "rate_limited"), (sent, answer)
    refused = expected_refusal(text)
    if refused is not None:
        assert answer["event"] == "error" and answer["code"] == refused, (sent, answer)
        return answer
    assert text is not None
    frame = json.loads(text)
    request_id = echoed_id(text)
    if request_id is not None:
        assert answer.get("id") == request_id, (sent, answer)
    action, stream = frame["action"], frame["stream"]
    if answer["event"] != "error":
        assert answer["event"] == SUCCESS[action], (sent, answer)
    else:
        assert answer["code"] in (
            ("bad_request", "not_found") if action == "unsubscribe" else ("bad_request",)
        ), (sent, answer)
    sub = frame.get("sub")
    if action == "unsubscribe" and isinstance(sub, str | int | float | type(None)):
        key = (stream, sub)
        assert answer["event"] == ("unsubscribed" if key in subscribed else "error"), (sent, answer)
        subscribed.discard(key)
    if action == "subscribe" and answer["event"] == "subscribed":
        subscribed.add((stream, sub))
        assert answer["stream"] == stream
    return answer


frame_texts = st.one_of(frames().map(to_json), raw_frames)
any_frame = st.one_of(
    frame_texts.map(lambda text: (text, None)), binary_frames.map(lambda data: (None, data))
)


@settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
@given(st.lists(any_frame, min_size=1, max_size=MAX_FRAMES))
async def test_every_hostile_frame_gets_one_well_formed_answer_and_the_connection_survives(
    sent: list[tuple[str | None, bytes | None]],
) -> None:
    with failures_logged() as failures:
        async with session() as client:
            subscribed: set = set()
            for text, data in sent:
                await check_frame(client, text, data, subscribed)
            # Still usable afterwards.
            answer = await client.answer(to_json({"action": "subscribe", "stream": "ok.after"}))
            assert answer["event"] == "subscribed"
    assert [r.getMessage() for r in failures.records] == []


@st.composite
def valid_frames(draw: Any) -> dict[str, Any]:
    """Frames a correct client sends; each must succeed."""
    action = draw(st.sampled_from(["subscribe", "push"]))
    frame: dict[str, Any] = {"action": action, "stream": draw(valid_streams)}
    if draw(st.booleans()):
        frame["id"] = draw(st.one_of(st.integers(0, 2**53), st.text(max_size=10)))
    if action == "subscribe":
        if draw(st.booleans()):
            frame["filter"] = draw(
                st.dictionaries(
                    st.text(min_size=1, max_size=5),
                    st.one_of(
                        st.integers(-5, 5),
                        st.text(max_size=3),
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "gt": st.integers(),
                                "ne": st.booleans(),
                                "in": st.lists(st.text(max_size=3), max_size=5),
                            },
                        ).filter(bool),
                    ),
                    min_size=1,
                    max_size=3,
                )
            )
        if draw(st.booleans()):
            frame["sub"] = draw(st.one_of(names, st.integers(0, 100)))
        if draw(st.booleans()):
            frame["snapshot"] = True
        if draw(st.booleans()):
            frame["since"] = {"epoch": draw(st.text(max_size=10)), "seq": draw(st.integers(0, 99))}
    else:
        frame["data"] = draw(
            st.one_of(plain_documents, st.lists(plain_documents, min_size=1, max_size=5))
        )
        frame["op"] = draw(st.sampled_from(["insert", "upsert"]))
    return frame


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(st.lists(valid_frames(), min_size=1, max_size=MAX_FRAMES))
async def test_valid_frames_succeed(sent: list[dict[str, Any]]) -> None:
    async with session() as client:
        for frame in sent:
            answer = await client.answer(json.dumps(frame))
            if answer.get("code") == "rate_limited" and "retry_after" in answer:
                # Another sub of the stream waits for its snapshot or replay (the stand-in
                # never answers): one at a time per stream and connection (issue 15).
                assert frame["action"] == "subscribe", (frame, answer)
                assert frame.get("snapshot") or frame.get("since"), (frame, answer)
                continue
            assert answer["event"] == SUCCESS[frame["action"]], (frame, answer)
            if "id" in frame:
                assert answer["id"] == frame["id"]
    pushes = [m for m in client.worker.received if m["type"] == "changeflow.push"]
    assert [m["data"] for m in pushes] == [f["data"] for f in sent if f["action"] == "push"]


@settings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(
    delta=st.integers(-8, 8),
    char=st.sampled_from(["a", "é", "€", "😀"]),
    action=st.sampled_from(["subscribe", "push"]),
)
async def test_frames_near_the_size_limit(delta: int, char: str, action: str) -> None:
    """Frames just under, at and over CHANGEFLOW_MAX_FRAME_BYTES, counted in UTF-8 bytes."""
    field = "data" if action == "push" else "filter"

    def frame(padding: str) -> str:
        body = {"action": action, "stream": "db.t", "id": 7, field: {"s": padding}}
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"))

    width = len(char.encode())
    count = (MAX_FRAME_BYTES + delta - len(frame("").encode())) // width
    text = frame(char * count)
    size = len(text.encode())
    async with session() as client:
        answer = await client.answer(text)
        if size > MAX_FRAME_BYTES:
            assert answer["event"] == "error" and answer["code"] == "too_large", (size, answer)
        else:
            assert answer["event"] == SUCCESS[action], (size, answer)
            assert answer["id"] == 7


@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH)
@given(stream=st.one_of(valid_streams, st.text(max_size=120), st.integers(95, 105)))
async def test_stream_names_are_refused_or_accepted_as_the_contract_says(stream: Any) -> None:
    if isinstance(stream, int):
        stream = "d." + "t" * (stream - 2)  # around the 99-character limit
    async with session() as client:
        for action in ("subscribe", "push"):
            answer = await client.answer(
                json.dumps({"action": action, "stream": stream, "data": {}, "id": 1})
            )
            if stream_is_valid(stream):
                assert answer["event"] == SUCCESS[action], (stream, answer)
            else:
                assert (answer["event"], answer["code"]) == ("error", "bad_request"), answer
    for message in client.worker.received:
        assert stream_is_valid(f"{message['database']}.{message['table']}")


@settings(max_examples=40, deadline=None, suppress_health_check=HEALTH)
@given(depth=st.integers(1, 60), kind=st.sampled_from(["list", "dict"]))
async def test_nesting_is_refused_beyond_the_documented_depth(depth: int, kind: str) -> None:
    """Documents "nested at most 20 levels" (README); the frame must also stay parseable."""
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    frame = {"action": "push", "stream": "db.t", "id": 1, "data": {"x": value}}
    async with session() as client:
        answer = await client.answer(json.dumps(frame))
    if depth < 20:
        assert answer["event"] == "pushed", (depth, answer)
    elif depth > 20:
        assert (answer["event"], answer["code"]) == ("error", "bad_request"), (depth, answer)
        assert "nested" in answer["message"]


REQL_DOCUMENTS = [
    {"$reql_type$": "TIME", "epoch_time": 0, "timezone": "+00:00"},
    {"a": {"$reql_type$": "BINARY", "data": "AAAA"}},
    {"a": [{"b": {"$reql_type$": "GEOMETRY", "type": "Point", "coordinates": [0, 0]}}]},
    [{"ok": 1}, {"deep": [[{"$reql_type$": "X"}]]}],
]


async def test_reql_pseudo_types_in_documents_keys_and_ids_never_reach_the_worker() -> None:
    async with session() as client:
        for index, data in enumerate(REQL_DOCUMENTS):
            for fields in (
                {"data": data},
                {"data": {"a": 1}, "op": "update", "key": [data]},
                {"data": {"a": 1}, "op": "update", "key": data} if isinstance(data, list) else {},
            ):
                if not fields:
                    continue
                frame = {"action": "push", "stream": "db.t", "id": index, **fields}
                answer = await client.answer(json.dumps(frame))
                assert (answer["event"], answer["code"]) == ("error", "bad_request"), answer
                assert "$reql_type$" in answer["message"]
    assert client.worker.received == []


async def test_nan_and_infinity_are_refused_and_never_echoed() -> None:
    texts = [
        '{"action":"push","stream":"db.t","id":1,"data":{"x":NaN}}',
        '{"action":"push","stream":"db.t","id":2,"data":{"x":-Infinity}}',
        '{"action":"push","stream":"db.t","id":3,"data":{"x":1e999}}',
        '{"action":"subscribe","stream":"db.t","id":4,"filter":{"x":{"gt":Infinity}}}',
        '{"action":"subscribe","stream":"db.t","id":NaN}',
    ]
    async with session() as client:
        for text in texts:
            answer = await client.answer(text)
            assert (answer["event"], answer["code"]) == ("error", "bad_request"), (text, answer)
    assert client.worker.received == []


async def test_an_infinite_id_is_not_echoed_as_infinity() -> None:
    """``1e999`` is valid JSON that Python reads as ``inf``; echoing it back as the
    literal ``Infinity`` would make the answer unreadable to ``JSON.parse``."""
    async with session() as client:
        for action in ("subscribe", "unsubscribe", "push", "dance"):
            text = f'{{"action":"{action}","stream":"db.t","data":{{}},"id":1e999}}'
            await client.answer(text)  # checks the answer is strict JSON


async def test_an_unhashable_sub_on_unsubscribe_is_a_bad_request() -> None:
    async with session() as client:
        for sub in ({}, [1], {"a": [2]}):
            frame = {"action": "unsubscribe", "stream": "db.t", "sub": sub, "id": 9}
            answer = await client.answer(json.dumps(frame))
            assert (answer["event"], answer["code"], answer["id"]) == ("error", "bad_request", 9)


async def test_a_sub_number_a_browser_cannot_keep_exactly_is_a_bad_request() -> None:
    async with session() as client:
        for sub in (2**53 + 1, -(2**60)):
            frame = {"action": "subscribe", "stream": "db.t", "sub": sub, "id": 4}
            answer = await client.answer(json.dumps(frame))
            assert (answer["event"], answer["code"], answer["id"]) == ("error", "bad_request", 4)
        frame = {"action": "subscribe", "stream": "db.t", "sub": 2**53, "id": 5}
        assert (await client.answer(json.dumps(frame)))["event"] == "subscribed"


async def test_lone_surrogates_in_a_push_are_a_bad_request() -> None:
    """``"\\ud800"`` is a valid JSON escape but no UTF-8 text: RethinkDB's driver and
    Redis (msgpack) cannot encode it, so the push must be refused up front."""
    async with session() as client:
        for data in ({"x": "\ud800"}, {"\udc00": 1}, [{"x": ["ok", "\udfff"]}]):
            answer = await client.answer(
                json.dumps({"action": "push", "stream": "db.t", "data": data, "id": 5})
            )
            assert (answer["event"], answer["code"]) == ("error", "bad_request"), answer


async def test_numbers_the_channel_layer_cannot_carry_are_a_bad_request(redis_url) -> None:
    """On the production layer (Redis, msgpack) integers beyond 64 bits cannot be sent:
    such a push is bad input, not an unavailable server."""
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": redis_url, "socket_timeout": None}],
                "prefix": "fuzz-frames",
            },
        }
    }
    with override_settings(**{**SETTINGS, "CHANNEL_LAYERS": layers}):
        communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        assert (await communicator.connect())[0]
        try:
            for text in (
                '{"action":"push","stream":"db.t","id":1,"data":{"n":100000000000000000000}}',
                '{"action":"push","stream":"db.t","id":100000000000000000000,"data":{}}',
            ):
                await communicator.send_to(text_data=text)
                answer = strict_json((await communicator.receive_output(timeout=5))["text"])
                assert (answer["event"], answer["code"]) == ("error", "bad_request"), answer
        finally:
            await communicator.disconnect()
            await get_channel_layer().close_pools()


bad_frames = st.one_of(
    binary_frames.map(lambda data: (None, data)),
    st.text(max_size=30).map(lambda text: ("x" + text, None)),  # never JSON
    st.builds(
        lambda frame, stream: (to_json({**frame, "stream": stream}), None),
        frames(),
        hostile_streams.filter(lambda stream: not stream_is_valid(stream)),
    ),
)


@settings(max_examples=5, deadline=None, suppress_health_check=HEALTH)
@given(st.lists(bad_frames, min_size=70, max_size=80))
async def test_a_client_that_keeps_sending_bad_frames_is_closed_with_4008(
    bad: list[tuple[str | None, bytes | None]],
) -> None:
    async with session(quiet_after=False) as client:
        errors = 0
        closed = None
        for text, data in bad:
            message = {"type": "websocket.receive", "text": text, "bytes": data}
            await client.communicator.send_input(
                {k: v for k, v in message.items() if v is not None}
            )
            output = await client.communicator.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                closed = output
                break
            assert json.loads(output["text"])["code"] == "bad_request"
            errors += 1
        assert closed is not None, errors
        assert closed["code"] == 4008
        assert 49 <= errors <= 60  # a burst of 50 refused frames
    assert client.worker.received == []
