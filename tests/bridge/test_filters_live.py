"""A filtered subscription stays equal to the filtered table under concurrent writes."""

from __future__ import annotations

import asyncio
import random

import pytest

from .helpers import WsClient

pytestmark = pytest.mark.usefixtures("worker")


async def test_filtered_view_equals_the_filtered_table_under_concurrent_writes(
    ws_connect, stream_db, rethinkdb_target, ar
):
    stream = f"{stream_db}.orders"
    conn = await ar.connect(**rethinkdb_target.connect_kwargs())
    await ar.db_create(stream_db).run(conn)
    table = ar.db(stream_db).table("orders")
    await ar.db(stream_db).table_create("orders").run(conn)
    # A real server reports a new table to the worker a moment later: the filtered
    # view starts once the worker follows the table (its feed announces the first
    # documents to a plain subscriber).
    watcher: WsClient = await ws_connect()
    await watcher.subscribe(stream)
    await table.insert([{"id": i, "status": "open", "total": i * 10} for i in range(20)]).run(conn)
    await watcher.changes(stream, 20, timeout=30)
    await watcher.connection.close()  # it has shown what it was for
    client: WsClient = await ws_connect()
    spec = {"status": "open", "total": {"ge": 50}}
    await client.send(
        {"action": "subscribe", "stream": stream, "snapshot": True, "filter": spec, "id": 1}
    )
    view: dict = {}

    def apply(frame: dict) -> None:
        if frame["event"] == "snapshot":
            view.clear()
            view.update({doc["id"]: doc for doc in frame["documents"]})
        elif frame["event"] == "change":
            if frame["new_val"] is None:
                view.pop(frame["old_val"]["id"], None)
            else:
                view[frame["new_val"]["id"]] = frame["new_val"]

    rng = random.Random(7)

    async def writer() -> None:
        for _ in range(150):  # documents move in and out of the filter all the time
            doc_id = rng.randrange(20)
            update = rng.choice(
                [{"status": "open"}, {"status": "closed"}, {"total": rng.randrange(0, 200)}]
            )
            await table.get(doc_id).update(update).run(conn)

    async def expected() -> dict:
        cursor = await table.filter(lambda d: (d["status"] == "open") & (d["total"] >= 50)).run(
            conn
        )
        return {doc["id"]: doc async for doc in cursor}

    writing = asyncio.ensure_future(writer())
    receiving: asyncio.Future[dict] | None = None
    try:
        # Read until the writer is done and the view equals the table. The last
        # writes may change nothing the filter lets through (no frame comes), so
        # the writer finishing also ends a wait for the next frame.
        while not (writing.done() and view == await expected()):
            if receiving is None:
                receiving = asyncio.ensure_future(client.recv(timeout=15))
            await asyncio.wait(
                {receiving} if writing.done() else {receiving, writing},
                return_when=asyncio.FIRST_COMPLETED,
            )
            if writing.done():
                writing.result()  # a writer that failed fails the test
            if receiving.done():
                frame, receiving = receiving.result(), None
                assert frame["event"] in ("subscribed", "snapshot", "change"), frame
                apply(frame)
    finally:
        for task in (writing, receiving):
            if task is not None:
                task.cancel()
        await conn.close(noreply_wait=False)
