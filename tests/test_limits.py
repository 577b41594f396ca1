"""Each limit trips with its error code (issue 6), in-process with small limits.

The consumer is real, on a fresh in-memory channel layer; ``WorkerStandIn`` plays
the worker on its channel (answers valid pushes, records anything invalid). The
document-size limit of channel-layer pushes is checked on the worker's push path with a
real ``Flow`` writing to the suite's RethinkDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.conf import get_settings
from changeflow_channels.consumers import ERROR_BURST, ERRORS_PER_SECOND, ChangeflowConsumer
from changeflow_channels.pushes import PUSH_TYPE
from changeflow_channels.worker.flow import Flow
from changeflow_channels.worker.runner import ChangeflowWorker

from .fuzzing import WorkerStandIn, strict_json

# Channels' dispatch closes stale database connections: consumer tests may touch the DB.
pytestmark = pytest.mark.django_db

SETTINGS = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "changeflow_channels.permissions.AllowAllPolicy",
    "CHANGEFLOW_SYNC_TIMEOUT": 600.0,
    "CHANGEFLOW_RECHECK_EVERY": 3600.0,
}


class Client:
    def __init__(self, communicator: WebsocketCommunicator, worker: WorkerStandIn) -> None:
        self.communicator = communicator
        self.worker = worker
        self.read = 0  # frames read, acknowledged as a client must (``ack``)

    async def send(self, frame: dict[str, Any] | str) -> dict[str, Any]:
        """Send a frame; return its one answer."""
        await self._send(frame if isinstance(frame, str) else json.dumps(frame, ensure_ascii=False))
        output = await self.communicator.receive_output(timeout=5)
        assert output["type"] == "websocket.send", output
        self.read += 1
        await self._send(json.dumps({"action": "ack", "frames": self.read}))
        return strict_json(output["text"])

    async def _send(self, text: str) -> None:
        await self.communicator.send_input({"type": "websocket.receive", "text": text})


@contextlib.asynccontextmanager
async def client(**limits: Any) -> AsyncIterator[Client]:
    with override_settings(**SETTINGS, **limits):
        async with WorkerStandIn(
            get_channel_layer(), max_document_bytes=get_settings().max_document_bytes
        ) as worker:
            communicator = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
            connected, _ = await communicator.connect()
            assert connected
            try:
                yield Client(communicator, worker)
                assert await communicator.receive_nothing(timeout=0.02)
            finally:
                await communicator.disconnect()
        assert worker.refused == []


def error(answer: dict[str, Any]) -> tuple[str, str]:
    return answer.get("event"), answer.get("code")


# -- frame size -------------------------------------------------------------------


def frame_of_padding(padding: str) -> str:
    return '{"action":"push","stream":"db.t","id":1,"data":{"s":"' + padding + '"}}'


def frame_of(size: int, char: str = "a") -> str:
    """A push frame of exactly ``size`` bytes of UTF-8 (``char`` is 1, 2, 3 or 4 bytes)."""
    padding = size - len(frame_of_padding(""))
    width = len(char.encode())
    assert padding % width == 0, (size, char)
    text = frame_of_padding(char * (padding // width))
    assert len(text.encode()) == size
    return text


async def test_a_frame_over_the_size_limit_is_too_large_and_the_limit_counts_bytes() -> None:
    async with client(CHANGEFLOW_MAX_FRAME_BYTES=1000) as c:
        assert (await c.send(frame_of(1000)))["event"] == "pushed"
        answer = await c.send(frame_of(1001))
        assert error(answer) == ("error", "too_large"), answer
        assert "1001 bytes" in answer["message"] and "1000" in answer["message"]
        # 4-byte characters: the limit is on bytes, not on characters.
        empty = len(frame_of_padding(""))
        fits = empty + 4 * ((1000 - empty) // 4)
        assert (await c.send(frame_of(fits, "😀")))["event"] == "pushed"
        answer = await c.send(frame_of(fits + 4, "😀"))  # about 300 characters
        assert error(answer) == ("error", "too_large"), answer
        # The connection is still usable, and nothing too large reached the worker.
        assert (await c.send({"action": "subscribe", "stream": "db.t", "id": 2}))["id"] == 2
    assert [m["id"] for m in c.worker.received] == [1, 1]


# -- subscriptions per connection --------------------------------------------------


async def test_subscriptions_beyond_the_limit_are_rate_limited() -> None:
    async with client(CHANGEFLOW_MAX_SUBSCRIPTIONS=3) as c:
        for index, (stream, sub) in enumerate([("db.a", None), ("db.b", None), ("db.a", "x")]):
            frame = {"action": "subscribe", "stream": stream, "id": index}
            if sub is not None:
                frame["sub"] = sub
            assert (await c.send(frame))["event"] == "subscribed"
        answer = await c.send({"action": "subscribe", "stream": "db.c", "id": 9})
        assert error(answer) == ("error", "rate_limited"), answer
        assert answer["id"] == 9 and "3" in answer["message"]
        # Subscribing again to a stream already held starts it afresh: not a new one.
        assert (await c.send({"action": "subscribe", "stream": "db.b"}))["event"] == "subscribed"
        # Once one ends, there is room again.
        assert (await c.send({"action": "unsubscribe", "stream": "db.b"}))["event"] == (
            "unsubscribed"
        )
        assert (await c.send({"action": "subscribe", "stream": "db.c"}))["event"] == "subscribed"


# -- pushes per second -------------------------------------------------------------


async def test_pushes_beyond_the_burst_are_rate_limited_and_the_rate_refills() -> None:
    # A burst of 2 x 1 = 2 pushes, then one a second: slow enough that a busy machine
    # handles each step well within a token's time.
    rate = 1.0
    async with client(CHANGEFLOW_PUSH_RATE=rate) as c:
        push = {"action": "push", "stream": "db.t", "data": {"n": 1}}
        answers = [await c.send({**push, "id": n}) for n in range(2)]
        assert [a["event"] for a in answers] == ["pushed"] * 2
        answer = await c.send({**push, "id": 10})
        assert error(answer) == ("error", "rate_limited"), answer
        assert answer["id"] == 10 and "1 pushes per second" in answer["message"]
        assert 0 < answer["retry_after"] <= 1 / rate  # when the next token is there
        # Subscriptions are not pushes: they are not limited by it.
        assert (await c.send({"action": "subscribe", "stream": "db.t"}))["event"] == "subscribed"
        await asyncio.sleep(1.5 / rate)  # the time for one push to refill (and a half)
        assert (await c.send({**push, "id": 11}))["event"] == "pushed"
        assert error(await c.send({**push, "id": 12})) == ("error", "rate_limited")
    assert [m["id"] for m in c.worker.received] == [*range(2), 11]


async def test_a_burst_of_pushes_beyond_the_rate_is_told_to_wait_not_closed() -> None:
    """Pushes refused for the rate carry ``retry_after`` and do not count as abuse (4008,
    past 50 refused frames): an application pushing many at once is slowed, not cut off."""
    rate = 5.0
    async with client(CHANGEFLOW_PUSH_RATE=rate) as c:
        push = {"action": "push", "stream": "db.t", "data": {"n": 1}}
        started = time.monotonic()
        answers = [await c.send({**push, "id": n}) for n in range(100)]
        # The buckets refill while they are handled (slower on a busy machine).
        elapsed = time.monotonic() - started
        refilled = int(rate * elapsed) + 1
        assert [a["event"] for a in answers[:10]] == ["pushed"] * 10
        pushed = [a for a in answers if a["event"] == "pushed"]
        refused = [a for a in answers if a["event"] != "pushed"]
        assert len(pushed) <= 10 + refilled
        # More refusals than the abuse limit would let through: they are not counted.
        abuse_allowed = ERROR_BURST + ERRORS_PER_SECOND * elapsed
        assert len(refused) > abuse_allowed, "too slow to tell: fewer refusals than allowed"
        assert {error(a) for a in refused} == {("error", "rate_limited")}
        assert all(a["retry_after"] > 0 for a in refused)
        # Still open.
        assert (await c.send({"action": "subscribe", "stream": "db.t"}))["event"] == "subscribed"
    assert len(c.worker.received) == len(pushed)


async def test_the_push_rate_is_per_connection() -> None:
    async with (
        client(CHANGEFLOW_PUSH_RATE=1.0) as first,
        client(CHANGEFLOW_PUSH_RATE=1.0) as second,
    ):
        push = {"action": "push", "stream": "db.t", "data": {}}
        assert [(await first.send(push))["event"] for _ in range(2)] == ["pushed"] * 2
        assert error(await first.send(push)) == ("error", "rate_limited")
        assert (await second.send(push))["event"] == "pushed"


# -- document size -----------------------------------------------------------------


def document_of(size: int, char: str = "a") -> dict[str, str]:
    """Data whose compact JSON is exactly ``size`` bytes of UTF-8."""
    padding = size - len(b'{"s":""}')
    width = len(char.encode())
    assert padding % width == 0
    data = {"s": char * (padding // width)}
    assert len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()) == size
    return data


async def test_a_websocket_push_over_the_document_limit_is_too_large() -> None:
    async with client(CHANGEFLOW_MAX_DOCUMENT_BYTES=200, CHANGEFLOW_MAX_FRAME_BYTES=65536) as c:
        push = {"action": "push", "stream": "db.t"}
        assert (await c.send({**push, "data": document_of(200), "id": 1}))["event"] == "pushed"
        answer = await c.send({**push, "data": document_of(201), "id": 2})
        assert error(answer) == ("error", "too_large"), answer
        assert answer["id"] == 2 and "201 bytes" in answer["message"]
        # Counted in UTF-8 bytes, for a list of documents as a whole.
        answer = await c.send({**push, "data": document_of(208, "é"), "id": 3})
        assert error(answer) == ("error", "too_large"), answer
        many = [document_of(50), document_of(50), document_of(50), document_of(50)]
        answer = await c.send({**push, "data": many, "id": 4})  # 4 x 50 + 5 = 205 bytes
        assert error(answer) == ("error", "too_large"), answer
        assert (await c.send({**push, "data": many[:3], "id": 5}))["event"] == "pushed"
    assert [m["id"] for m in c.worker.received] == [1, 5]


async def test_a_channel_layer_push_over_the_document_limit_is_refused_by_the_worker(
    rethinkdb_target, dbname, conn, r
) -> None:
    """The worker's push path with a real ``Flow`` (not started: no feeds) on the
    suite's RethinkDB: the oversized push is answered ``ok: false`` and not
    written; the next push is written."""
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CHANGEFLOW_RETHINKDB=rethinkdb_target.url,
        CHANGEFLOW_MAX_DOCUMENT_BYTES=200,
    ):
        layer = get_channel_layer()
        # Watching nothing: not started, no feed would announce a write (feed_gate.py).
        flow = Flow(get_settings(), layer, [], watch=[])
        worker = ChangeflowWorker("changeflow", layer, flow)
        reply = await layer.new_channel()
        push = {"type": PUSH_TYPE, "database": dbname, "table": "limits", "reply_channel": reply}
        try:
            await worker.take({**push, "data": document_of(201), "id": "big"})
            await worker.take({**push, "data": document_of(200), "id": "fits"})
            big = await asyncio.wait_for(layer.receive(reply), 10)
            fits = await asyncio.wait_for(layer.receive(reply), 10)
        finally:
            worker.pipeline.close()
            await flow.stop()
    assert (big["id"], big["ok"]) == ("big", False), big
    assert big["error"] == "data is 201 bytes of JSON; at most 200 are accepted"
    assert (fits["id"], fits["ok"], fits["inserted"]) == ("fits", True, 1), fits
    written = r.table("limits").run(conn)
    assert [document["s"] for document in written] == [document_of(200)["s"]]


# -- abuse ----------------------------------------------------------------------


async def test_a_client_sending_many_bad_frames_is_closed_with_4008() -> None:
    async with client() as c:
        communicator = c.communicator
        errors = 0
        for _ in range(60):
            await communicator.send_input({"type": "websocket.receive", "text": "not json"})
            output = await communicator.receive_output(timeout=5)
            if output["type"] == "websocket.close":
                break
            assert error(strict_json(output["text"])) == ("error", "bad_request")
            errors += 1
        assert output == {"type": "websocket.close", "code": 4008}, output
        assert 49 <= errors <= 55  # the documented burst is 50 bad frames
        # Closed means closed: frames still arriving are not handled or answered.
        await communicator.send_input({"type": "websocket.receive", "text": "not json"})
        await communicator.send_input(
            {"type": "websocket.receive", "text": '{"action":"push","stream":"db.t","data":{}}'}
        )
        assert await communicator.receive_nothing(timeout=0.1)
    assert c.worker.received == []


async def test_an_honest_busy_client_is_not_closed() -> None:
    """Many frames, all good, and a few refused ones spread among them: no close."""
    # Subscribing 150 times in a moment is beyond CHANGEFLOW_SUBSCRIBE_RATE: not this test's.
    async with client(CHANGEFLOW_PUSH_RATE=1000.0, CHANGEFLOW_SUBSCRIBE_RATE=1000.0) as c:
        for n in range(150):
            stream = f"db.t{n % 7}"
            assert (await c.send({"action": "subscribe", "stream": stream}))["event"] == (
                "subscribed"
            )
            assert (await c.send({"action": "push", "stream": stream, "data": {"n": n}}))[
                "event"
            ] == "pushed"
            if n % 5 == 0:  # 30 refused frames in all, below the burst
                answer = await c.send({"action": "unsubscribe", "stream": "db.never"})
                assert error(answer) == ("error", "not_found")
