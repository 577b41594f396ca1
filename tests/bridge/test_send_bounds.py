"""End to end through Daphne: what a connection holds is bounded, no frame is too large to
send, and a frame that cannot be sent is never skipped silently (issue 14: cases 4, 5, 10).

Daphne takes every frame at once (it never blocks a send) and refuses to send a message over
1 MiB: the consumer must bound both itself, with the client's acknowledgements (``ack``)
and ``CHANGEFLOW_MAX_SENT_FRAME_BYTES``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.protocol import State

from changeflow_channels.testing.processes import DAPHNE_READY, free_port, start_daphne

from ..conftest import save_output
from .conftest import REPO
from .helpers import WsClient, receive

pytestmark = pytest.mark.usefixtures("worker")

MAX_SENT = 1_000_000  # CHANGEFLOW_MAX_SENT_FRAME_BYTES's default
WINDOW_BYTES = 2 * 1024 * 1024  # CHANGEFLOW_SEND_WINDOW_BYTES's default


async def push(layer: Any, database: str, table: str, data: Any, **fields: Any) -> dict[str, Any]:
    reply = await layer.new_channel()
    message = {"type": "changeflow.push", "database": database, "table": table, "data": data}
    await layer.send("changeflow", {**message, "reply_channel": reply, **fields})
    answer = await receive(layer, reply, timeout=30)
    assert answer["ok"] is True, answer
    return answer


async def raw_connect(url: str, **options: Any) -> Any:
    origin = url.replace("ws://", "http://").split("/ws/")[0]
    return await websockets.connect(url, open_timeout=10, origin=origin, **options)


async def until_closed(connection: Any, timeout: float = 60.0) -> tuple[list[str], int | None]:
    """Read every frame until the server closes: (their texts, the close code)."""
    texts: list[str] = []

    async def read() -> None:
        try:
            async for text in connection:
                texts.append(text)
        except websockets.ConnectionClosed:
            pass

    await asyncio.wait_for(read(), timeout)
    return texts, connection.close_code


@pytest.mark.parametrize("reads", [False, True], ids=["never-reads", "reads-never-acks"])
async def test_a_client_that_never_acknowledges_is_closed_with_4009(
    daphne, layer, stream_db, reads
):
    """Case 4: it was sent everything, and Daphne's memory grew without bound. Now it
    gets the window, then is closed once the send queue is full. One that does not
    read cannot read the close frame either: Daphne drops it (1006) after its close
    handshake times out."""
    table = "unread"
    stream = f"{stream_db}.{table}"
    await push(layer, stream_db, table, {"id": "first"})  # the table exists, followed
    # Not reading: it buffers one frame, then TCP fills.
    client = await raw_connect(daphne, max_queue=None if reads else 1, max_size=None)
    await client.send(json.dumps({"action": "subscribe", "stream": stream, "id": 1}))
    pad = "x" * 40_000
    for round_ in range(40):  # up to 32 MB, far more than the window and the send queue
        docs = [{"id": f"{round_}-{n}", "pad": pad} for n in range(20)]
        await push(layer, stream_db, table, docs)
        if client.state is State.CLOSED:
            break
    texts, code = await until_closed(client)
    assert code in ((4009,) if reads else (4009, 1006))
    received = sum(len(text) for text in texts)
    assert received <= WINDOW_BYTES + MAX_SENT, received


def snapshot_documents(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert all(part["event"] == "snapshot" for part in parts)
    assert [part.get("part", 0) for part in parts] == list(range(len(parts)))
    return [document for part in parts for document in part["documents"]]


async def read_snapshot(client: WsClient, stream: str, timeout: float = 30) -> list[dict]:
    """The parts of the next snapshot of ``stream``, up to the one with ``last``."""
    parts = []
    while True:
        part = await client.wait_for(
            lambda f: f.get("event") == "snapshot" and f.get("stream") == stream, timeout
        )
        parts.append(part)
        if part.get("last", True):
            return parts


async def test_a_snapshot_of_1000_documents_of_1200_bytes_reaches_the_client_whole(
    ws_connect, layer, stream_db
):
    """Case 10a: within CHANGEFLOW_SNAPSHOT_LIMIT, but over Daphne's 1 MiB as one frame:
    the writer died and the client was frozen."""
    table = "big_snapshot"
    stream = f"{stream_db}.{table}"
    docs = [{"id": f"{n:04}", "pad": "s" * 1200} for n in range(1000)]
    for start in range(0, 1000, 250):
        await push(layer, stream_db, table, docs[start : start + 250])
    client: WsClient = await ws_connect()
    answer = await client.request("subscribe", stream, snapshot=True)
    assert answer["event"] == "subscribed", answer
    parts = await read_snapshot(client, stream)
    got = snapshot_documents(parts)
    assert len(parts) >= 2
    assert sorted(got, key=lambda d: d["id"]) == docs
    # And the connection goes on.
    await push(layer, stream_db, table, {"id": "after"})
    [change] = await client.changes(stream, 1, timeout=20)
    assert change["new_val"] == {"id": "after"}


async def test_a_document_grown_past_1_mib_gives_too_large_errors_not_a_freeze(
    ws_connect, layer, stream_db
):
    """Case 10b: pushes of 60 KB into one document; its change frames (old and new
    value) pass 1 MiB. Every change is a change frame or a too_large error frame with
    its position, and the connection goes on."""
    table = "growing"
    stream = f"{stream_db}.{table}"
    await push(layer, stream_db, table, {"id": "doc"})
    client: WsClient = await ws_connect()
    await client.subscribe(stream)
    await push(layer, stream_db, table, {"id": "marker"})
    first = await client.wait_for(lambda f: (f.get("new_val") or {}).get("id") == "marker", 20)
    pushes = 18  # 18 x 60 KB: the document ends over 1 MiB
    for n in range(pushes):
        await push(layer, stream_db, table, {f"p{n}": "g" * 60_000}, op="update", key="doc")
    await push(layer, stream_db, table, {"id": "small"})
    seen: list[dict[str, Any]] = []
    while not seen or seen[-1].get("new_val") != {"id": "small"}:
        seen.append(
            await client.wait_for(lambda f: f.get("stream") == stream and "seq" in f, timeout=30)
        )
    assert [frame["seq"] for frame in seen] == list(range(first["seq"] + 1, first["seq"] + 20))
    errors = [frame for frame in seen if frame["event"] == "error"]
    assert errors and all(frame["code"] == "too_large" for frame in errors)
    assert all(frame["epoch"] == first["epoch"] for frame in seen)
    assert seen[-1]["event"] == "change"


@pytest.fixture
def daphne_over_its_limit(process_env) -> Iterator[str]:
    """A Daphne whose consumers may make frames larger than Daphne sends (a
    misconfiguration that only plain Daphne starts with): its send of such a frame fails."""
    port = free_port()
    env = {**process_env, "DJANGO_SETTINGS_MODULE": "tests.bridge.settings_large_frames"}
    process = start_daphne("tests.asgi:application", port, env=env, cwd=str(REPO), module="daphne")
    process.wait_for(DAPHNE_READY, timeout=60)
    yield f"ws://127.0.0.1:{port}/ws/changeflow/"
    process.stop()
    save_output("daphne_over_its_limit", process)


async def test_a_frame_daphne_fails_to_send_closes_with_4011_and_is_not_skipped(
    daphne_over_its_limit, layer, stream_db
):
    """Case 5 (and 10): the writer task died on the failed send, the socket stayed
    open and the client got nothing more, unaware. Now the connection closes with
    4011; resuming with ``since`` never passes over the change silently."""
    table = "unsendable"
    stream = f"{stream_db}.{table}"
    await push(layer, stream_db, table, {"id": "before"})
    connection = await raw_connect(daphne_over_its_limit, max_size=None)
    client = WsClient(connection)
    await client.subscribe(stream)
    await push(layer, stream_db, table, {"id": "small"})
    [small] = await client.changes(stream, 1, timeout=20)
    await push(layer, stream_db, table, {"id": "big", "pad": "b" * 600_000})
    # Its change frame (old and new value) is over Daphne's 1 MiB:
    await push(layer, stream_db, table, {"n": 1}, op="update", key="big")
    await push(layer, stream_db, table, {"id": "after"})
    _, code = await until_closed(connection, timeout=30)
    assert code == 4011
    # Resumed right after "small": the client gets the change after it, or is closed
    # again; never a later change without the one before.
    again = WsClient(await raw_connect(daphne_over_its_limit, max_size=None))
    since = {"epoch": small["epoch"], "seq": small["seq"]}
    answer = await again.request("subscribe", stream, since=since)
    assert answer["event"] == "subscribed", answer
    try:
        frame = await again.wait_for(lambda f: f.get("stream") == stream, timeout=20)
    except websockets.ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 4011
    else:
        assert frame.get("seq") == small["seq"] + 1, frame
    await again.connection.close()
