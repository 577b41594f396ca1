"""changeflow.js in Chromium: acknowledgements, snapshots in parts, idempotency keys and
retries (issue 14, items 3, 4, 5 and 8).

The first two run against the demo's real worker and Daphne. The retries need a server
that answers ``unavailable`` or not at all on cue: there the page's ``WebSocket`` is a
scripted stand-in, and what the client sends is checked frame by frame.
"""

from __future__ import annotations

import uuid

import pytest
from rethinkdb import RethinkDB

from .scripted import scripted

pytestmark = pytest.mark.slow

MODULE = "/static/changeflow_channels/changeflow.js"


async def open_blank(browser, demo_stack):
    """A page of the demo's origin (for its static files and websocket), errors recorded."""
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(demo_stack.url)
    return page, errors


def write(rethinkdb_target, database: str, table: str, docs: list[dict]) -> None:
    r = RethinkDB()
    conn = r.connect(**rethinkdb_target.connect_kwargs())
    try:
        if database not in r.db_list().run(conn):
            r.db_create(database).run(conn)
        if table not in r.db(database).table_list().run(conn):
            r.db(database).table_create(table).run(conn)
        for start in range(0, len(docs), 50):
            r.db(database).table(table).insert(docs[start : start + 50]).run(conn)
    finally:
        conn.close()


async def test_the_client_acknowledges_so_a_long_stream_keeps_coming(
    browser, demo_stack, rethinkdb_target
):
    """Far more than the server's window (2 MiB unacknowledged): without acks it
    stops sending, and the changes stop coming."""
    database, table = f"web_{uuid.uuid4().hex[:8]}", "acks"
    write(rethinkdb_target, database, table, [{"id": "first"}])
    page, errors = await open_blank(browser, demo_stack)
    await page.evaluate(
        """async ([module, stream]) => {
            const { Changeflow } = await import(module);
            window.flow = new Changeflow("/ws/changeflow/");
            window.seen = 0;
            window.flow.subscribe(stream, () => { window.seen += 1; });
            await window.flow.subscribed(stream);
        }""",
        [MODULE, f"{database}.{table}"],
    )
    docs = [{"id": n, "pad": "a" * 20_000} for n in range(400)]  # 8 MB
    write(rethinkdb_target, database, table, docs)
    await page.wait_for_function("() => window.seen >= 400", timeout=60_000)
    assert await page.evaluate("() => window.flow.state") == "open"
    assert errors == []


async def test_a_snapshot_in_parts_reaches_on_snapshot_once_and_whole(
    browser, demo_stack, rethinkdb_target
):
    database, table = f"web_{uuid.uuid4().hex[:8]}", "parts"
    docs = [{"id": f"{n:04}", "pad": "p" * 1200} for n in range(1000)]  # 1.2 MB: two frames
    write(rethinkdb_target, database, table, docs)
    page, errors = await open_blank(browser, demo_stack)
    snapshots = await page.evaluate(
        """async ([module, stream]) => {
            const { Changeflow } = await import(module);
            const flow = new Changeflow("/ws/changeflow/");
            const parts = [];
            flow.addEventListener("frame", (e) => {
                if (e.detail.event === "snapshot") parts.push(e.detail.part ?? null);
            });
            const snapshots = [];
            await new Promise((resolve) => {
                flow.subscribe(stream, () => {}, {
                    snapshot: true,
                    onSnapshot: (snap) => {
                        snapshots.push({ count: snap.documents.length, last: snap.last, parts });
                        // The worker may answer "not followed yet" first (an empty snapshot).
                        if (snap.documents.length) resolve();
                    },
                });
            });
            flow.close();
            return snapshots;
        }""",
        [MODULE, f"{database}.{table}"],
    )
    whole = snapshots[-1]
    assert whole["count"] == 1000 and whole["last"] is None, snapshots  # whole: no parts left
    assert whole["parts"] == [0, 1], snapshots  # it came in two frames
    assert errors == []


# A WebSocket stand-in: answers subscribes "unavailable" twice, then "subscribed"; leaves a
# push's first attempt unanswered and answers the second.
SCRIPTED = scripted(
    setup="let refusals = 0, pushes = 0;",
    answer="""
        sent.push(frame);
        if (frame.action === "subscribe") {
            if (refusals++ < 2) {
                return [{ event: "error", code: "unavailable", message: "layer", id: frame.id }];
            }
            return [{ event: "subscribed", stream: frame.stream, id: frame.id }];
        }
        if (frame.action === "push" && pushes++ > 0) {
            return [{ event: "pushed", ok: true, id: frame.id, inserted: 1 }];
        }
    """,
    run="""
        const flow = new Changeflow("ws://scripted.invalid/ws/", { minDelay: 20, maxDelay: 50 });
        flow.subscribe("db.t", () => {});
        const subscribed = await flow.subscribed("db.t");
        const pushed = await flow.push("db.t", { n: 1 }, { timeout: 200 });
        flow.close();
        return { sent, subscribed, pushed };
    """,
)


async def test_retries_subscribe_refused_as_unavailable_and_pushes_with_the_same_key(
    browser, demo_stack
):
    page, errors = await open_blank(browser, demo_stack)
    result = await page.evaluate(SCRIPTED, MODULE)
    sent = [frame for frame in result["sent"] if frame["action"] != "ack"]
    subscribes = [frame for frame in sent if frame["action"] == "subscribe"]
    assert len(subscribes) == 3  # refused twice as "unavailable", then taken
    assert result["subscribed"]["event"] == "subscribed"
    pushes = [frame for frame in sent if frame["action"] == "push"]
    assert len(pushes) == 2  # the first had no answer within its timeout
    key = pushes[0]["idempotency_key"]
    assert isinstance(key, str) and 0 < len(key) <= 128
    assert pushes[1]["idempotency_key"] == key and pushes[1]["id"] == pushes[0]["id"]
    assert result["pushed"]["ok"] is True
    assert errors == []


TOO_LARGE = scripted(
    answer="""
        if (frame.action !== "subscribe") return [];
        return [
            { event: "subscribed", stream: frame.stream, id: frame.id },
            { event: "change", stream: "db.t", type: "add", old_val: null,
              new_val: { id: 1 }, epoch: "e", seq: 1 },
            { event: "error", code: "too_large", stream: "db.t", epoch: "e", seq: 2,
              message: "change 2 of db.t is larger than 1000000 bytes as a frame" },
        ];
    """,
    run="""
        const flow = new Changeflow("ws://scripted.invalid/ws/");
        const error = new Promise((resolve) => flow.addEventListener("error", (e) => resolve(e.detail)));
        flow.subscribe("db.t", () => {});
        const detail = await error;
        const position = flow.position("db.t");
        flow.close();
        return { detail, position };
    """,
)


async def test_a_change_too_large_to_send_is_an_error_event_and_the_position_moves_past_it(
    browser, demo_stack
):
    page, errors = await open_blank(browser, demo_stack)
    result = await page.evaluate(TOO_LARGE, MODULE)
    detail = result["detail"]
    assert (detail["code"], detail["stream"], detail["epoch"], detail["seq"]) == (
        "too_large",
        "db.t",
        "e",
        2,
    )
    assert result["position"] == {"epoch": "e", "seq": 2}  # a resume does not ask for it again
    assert errors == []


async def test_a_refused_token_closes_the_client_for_good(browser, demo_stack):
    """Close 4002 (a token not valid): one websocket, an error event, state "closed", and no
    reconnect (before, the client reconnected with backoff, forever)."""
    page, errors = await open_blank(browser, demo_stack)
    sockets = []
    page.on("websocket", lambda socket: sockets.append(socket))
    await page.evaluate(
        """async (module) => {
            const { Changeflow } = await import(module);
            window.errorCodes = [];
            window.flow = new Changeflow("/ws/changeflow/?token=not-a-token");
            window.flow.addEventListener("error", (e) => window.errorCodes.push(e.detail.code));
        }""",
        MODULE,
    )
    await page.wait_for_function("() => window.flow.state === 'closed'", timeout=15_000)
    assert await page.evaluate("() => window.errorCodes") == ["unauthorized"]
    # The demo page's own websocket aside, the one with the refused token was opened once.
    assert len([socket for socket in sockets if "token=" in socket.url]) == 1
    assert errors == []


async def test_a_refusal_whose_close_code_is_lost_still_closes_the_client_for_good(
    browser, demo_stack
):
    """The server refuses (an ``unauthorized`` error frame) and the connection then drops
    without its close frame (1006: a proxy, a crash; a CI run once saw the client connect
    again after a refused token). The client stops for good all the same: one socket."""
    from websockets.asyncio.server import serve

    from changeflow_channels.web.protocol import encode, error_frame

    connections = 0

    async def refuse_then_drop(websocket) -> None:
        nonlocal connections
        connections += 1
        await websocket.send(encode(error_frame("unauthorized", "your token is not valid")))
        websocket.transport.abort()  # no close frame: the browser sees 1006

    async with serve(refuse_then_drop, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        page, errors = await open_blank(browser, demo_stack)
        await page.evaluate(
            """async ([module, url]) => {
                const { Changeflow } = await import(module);
                window.errorCodes = [];
                window.flow = new Changeflow(url, { minDelay: 50, maxDelay: 100 });
                window.flow.addEventListener("error", (e) => window.errorCodes.push(e.detail.code));
            }""",
            [MODULE, f"ws://127.0.0.1:{port}/"],
        )
        await page.wait_for_function("() => window.flow.state === 'closed'", timeout=15_000)
        assert await page.evaluate("() => window.errorCodes") == ["unauthorized"]
        assert connections == 1
        assert errors == []
