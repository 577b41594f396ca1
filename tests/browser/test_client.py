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
SCRIPTED = """async (module) => {
    const { Changeflow } = await import(module);
    const sent = [];
    let refusals = 0, pushes = 0;
    class ScriptedSocket {
        constructor(url) {
            this.url = url;
            setTimeout(() => this.onopen && this.onopen(), 0);
        }
        send(text) {
            const frame = JSON.parse(text);
            sent.push(frame);
            const answer = (reply) => setTimeout(
                () => this.onmessage && this.onmessage({ data: JSON.stringify(reply) }), 0);
            if (frame.action === "subscribe") {
                if (refusals++ < 2) {
                    answer({ event: "error", code: "unavailable", message: "layer", id: frame.id });
                } else {
                    answer({ event: "subscribed", stream: frame.stream, id: frame.id });
                }
            } else if (frame.action === "push" && pushes++ > 0) {
                answer({ event: "pushed", ok: true, id: frame.id, inserted: 1 });
            }
        }
        close() {}
    }
    const real = window.WebSocket;
    window.WebSocket = ScriptedSocket;
    try {
        const flow = new Changeflow("ws://scripted.invalid/ws/", { minDelay: 20, maxDelay: 50 });
        flow.subscribe("db.t", () => {});
        const subscribed = await flow.subscribed("db.t");
        const pushed = await flow.push("db.t", { n: 1 }, { timeout: 200 });
        flow.close();
        return { sent, subscribed, pushed };
    } finally {
        window.WebSocket = real;
    }
}"""


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


TOO_LARGE = """async (module) => {
    const { Changeflow } = await import(module);
    class ScriptedSocket {
        constructor(url) {
            setTimeout(() => this.onopen && this.onopen(), 0);
        }
        send(text) {
            const frame = JSON.parse(text);
            if (frame.action !== "subscribe") return;
            const frames = [
                { event: "subscribed", stream: frame.stream, id: frame.id },
                { event: "change", stream: "db.t", type: "add", old_val: null,
                  new_val: { id: 1 }, epoch: "e", seq: 1 },
                { event: "error", code: "too_large", stream: "db.t", epoch: "e", seq: 2,
                  message: "change 2 of db.t is larger than 1000000 bytes as a frame" },
            ];
            for (const reply of frames) {
                setTimeout(() => this.onmessage({ data: JSON.stringify(reply) }), 0);
            }
        }
        close() {}
    }
    const real = window.WebSocket;
    window.WebSocket = ScriptedSocket;
    try {
        const flow = new Changeflow("ws://scripted.invalid/ws/");
        const error = new Promise((resolve) => flow.addEventListener("error", (e) => resolve(e.detail)));
        flow.subscribe("db.t", () => {});
        const detail = await error;
        const position = flow.position("db.t");
        flow.close();
        return { detail, position };
    } finally {
        window.WebSocket = real;
    }
}"""


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
