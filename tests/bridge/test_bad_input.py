"""Bad pushes and bad websocket frames: a clear error each, and everything keeps working."""

from __future__ import annotations

import pytest

from .helpers import WsClient, receive

pytestmark = pytest.mark.usefixtures("worker")

BAD_PUSHES = [
    ({"table": "t", "data": {}}, "database name must be a non-empty string"),
    ({"database": "bad name", "table": "t", "data": {}}, "database name 'bad name' is invalid"),
    ({"database": "{db}", "table": "a.b", "data": {}}, "table name 'a.b' is invalid"),
    (
        {"database": "{db}", "table": "t", "data": "a string"},
        "data must be an object or a list of objects",
    ),
    ({"database": "{db}", "table": "t", "data": [{"ok": 1}, "x"]}, "data[1] must be an object"),
    (
        {"database": "{db}", "table": "t", "data": {"b": b"bytes"}},
        "data.b is a bytes, which is not JSON",
    ),
    ({"database": "{db}", "table": "t", "data": {"$reql_type$": "TIME"}}, "reserved key"),
    ({"database": "{db}", "table": "t", "data": {}, "op": "explode"}, "unknown op 'explode'"),
    ({"database": "{db}", "table": "t", "op": "update"}, "update needs a key, or documents"),
    (
        {"database": "{db}", "table": "t", "data": {"a": 1}, "op": "delete"},
        None,
    ),  # valid: by document
]


@pytest.mark.parametrize(("fields", "error"), BAD_PUSHES)
async def test_bad_push_is_answered_and_the_next_push_works(layer, stream_db, fields, error):
    reply = await layer.new_channel()
    message = {"type": "changeflow.push", "reply_channel": reply, "id": "bad"}
    message.update(
        {k: (v.format(db=stream_db) if isinstance(v, str) else v) for k, v in fields.items()}
    )
    await layer.send("changeflow", message)
    answer = await receive(layer, reply)
    assert answer["type"] == "changeflow.push.result"
    assert answer["id"] == "bad"
    if error is None:
        assert answer["ok"] is False and "primary key" in answer["error"]
    else:
        assert answer["ok"] is False
        assert error in answer["error"]
    await layer.send(
        "changeflow",
        {
            "type": "changeflow.push",
            "database": stream_db,
            "table": "after",
            "data": {"x": 1},
            "reply_channel": reply,
        },
    )
    assert (await receive(layer, reply))["ok"] is True


async def test_messages_without_or_with_unknown_type_are_refused(layer, stream_db):
    reply = await layer.new_channel()
    await layer.send("changeflow", {"database": stream_db, "reply_channel": reply, "id": 1})
    answer = await receive(layer, reply)
    assert answer["ok"] is False and "no type" in answer["error"]
    await layer.send("changeflow", {"type": "changeflow.bogus", "reply_channel": reply, "id": 2})
    answer = await receive(layer, reply)
    assert answer["ok"] is False and "unknown message type" in answer["error"]
    await layer.send(
        "changeflow",
        {
            "type": "changeflow.push",
            "database": stream_db,
            "table": "t",
            "data": {},
            "reply_channel": reply,
        },
    )
    assert (await receive(layer, reply))["ok"] is True


BAD_FRAMES = [
    ("not json", "bad_request", "not valid JSON"),
    ("[1, 2]", "bad_request", "must be a JSON object"),
    ('{"action": "dance", "stream": "a.b", "id": 5}', "bad_request", "unknown action"),
    ('{"action": "subscribe", "stream": "no_dot", "id": 6}', "bad_request", "database.table"),
    ('{"action": "subscribe", "stream": "a b.c", "id": 7}', "bad_request", "invalid"),
    (
        '{"action": "subscribe", "stream": "private.secrets", "id": 8}',
        "forbidden",
        "may not subscribe",
    ),
    (
        '{"action": "push", "stream": "readonly.t", "data": {}, "id": 9}',
        "forbidden",
        "may not push",
    ),
    (
        '{"action": "push", "stream": "ok.t", "data": "text", "id": 10}',
        "bad_request",
        "data must be",
    ),
    ('{"action": "unsubscribe", "stream": "ok.never", "id": 11}', "not_found", "not subscribed"),
]


async def test_bad_frames_get_error_frames_and_the_connection_stays_usable(
    ws_connect, layer, stream_db
):
    client: WsClient = await ws_connect()
    for frame, code, message in BAD_FRAMES:
        await client.send(frame)
        answer = await client.recv()
        assert answer["event"] == "error", (frame, answer)
        assert answer["code"] == code, (frame, answer)
        assert message in answer["message"], (frame, answer)
    await client.connection.send(b"\x00binary")
    answer = await client.recv()
    assert answer["code"] == "bad_request" and "binary" in answer["message"]

    stream = f"{stream_db}.usable"
    await client.subscribe(stream)
    pushed = await client.request("push", stream, data={"still": "works"})
    assert pushed["event"] == "pushed" and pushed["inserted"] == 1, pushed
    [change] = await client.changes(stream, 1)
    assert change["new_val"]["still"] == "works"


async def test_websocket_push_error_from_the_worker_is_an_error_frame(ws_connect, stream_db):
    client: WsClient = await ws_connect()
    stream = f"{stream_db}.dup"
    first = await client.request("push", stream, data={"id": 1})
    assert first["event"] == "pushed"
    second = await client.request("push", stream, data={"id": 1})
    assert second["event"] == "error" and second["code"] == "bad_request"
    assert "Duplicate primary key" in second["message"]
