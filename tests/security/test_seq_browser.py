"""changeflow.js resumes with the cursor under a row rule (issue 15, item 6).

Chromium (Playwright) on a page of the security site's origin (changeflow.js
served through Playwright's routing), logged in with a session cookie, against
the site's real Daphne, worker, Redis and RethinkDB. The page's ``WebSocket``
is the browser's own, wrapped only to record what the client sends and to
hold it offline on cue."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ..browser.conftest import CHROMIUM, CHROMIUM_ARGS, REPO
from .conftest import DATABASE

pytestmark = pytest.mark.slow

CLIENT = REPO / "changeflow_channels" / "static" / "changeflow_channels" / "changeflow.js"

SETUP = """async ([url, stream]) => {
    const real = window.WebSocket;
    window.sent = [];
    window.offline = false;
    window.sockets = [];
    window.WebSocket = class extends real {
        constructor(target) {
            super(window.offline ? "ws://127.0.0.1:9/offline" : target);
            window.sockets.push(this);
        }
        send(text) {
            window.sent.push(JSON.parse(text));
            super.send(text);
        }
    };
    const { Changeflow } = await import("/changeflow.js");
    window.flow = new Changeflow(url, { minDelay: 50, maxDelay: 200 });
    window.got = [];
    window.flow.subscribe(stream, (change) => window.got.push(change), {
        snapshot: true,
        onSnapshot: (snap) => window.got.push(snap),
        onResync: (frame) => window.got.push(frame),
    });
    await window.flow.subscribed(stream);
}"""


@pytest.fixture
async def page(site: Any) -> AsyncIterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed (make chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context()
        await context.route(
            f"{site.origin}/changeflow.js",
            lambda route: route.fulfill(
                body=CLIENT.read_text(), content_type="application/javascript"
            ),
        )
        errors: list[str] = []
        opened = await context.new_page()
        opened.on("pageerror", lambda error: errors.append(str(error)))
        opened.set_default_timeout(15_000)
        yield context, opened
        await browser.close()
        assert errors == [], errors


def summary(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for event in events:
        if event["event"] == "change":
            value = event.get("new_val") or event.get("old_val")
            out.append(("change", event["type"], value["id"], event["seq"]))
        elif event["event"] == "snapshot":
            out.append(("snapshot", tuple(d["id"] for d in event["documents"]), event["seq"]))
        else:
            out.append((event["event"], event.get("reason")))
    return out


async def test_the_client_resumes_with_its_cursor_and_misses_nothing(
    site, make_user, table, push, page
):
    context, page = page
    alice, bob = make_user(), make_user()
    stream = f"{DATABASE}.{table}"
    await context.add_cookies([{"name": "sessionid", "value": alice.session, "url": site.origin}])
    await page.goto(f"{site.origin}/")  # a page of the site's own (a 404 will do)
    await asyncio.wait_for(page.evaluate(SETUP, [site.ws_url, stream]), 15)
    await page.wait_for_function("() => window.got.some((e) => e.event === 'snapshot')")
    await push(table, [{"id": f"h{n}", "owner": bob.name} for n in range(100)])
    await push(table, {"id": "a1", "owner": alice.name})
    await page.wait_for_function("() => window.got.some((e) => e.new_val?.id === 'a1')")
    position = await page.evaluate(f"() => window.flow.position({stream!r})")
    assert isinstance(position.get("cursor"), str), position

    # The connection drops; while the client is away (it cannot reconnect) things happen.
    await page.evaluate("() => { window.offline = true; window.sockets.at(-1).close(); }")
    await page.wait_for_function("() => window.flow.state === 'reconnecting'")
    await push(table, [{"id": f"k{n}", "owner": bob.name} for n in range(60)])
    await push(table, {"id": "a2", "owner": alice.name})
    await push(table, {"n": 1}, op="update", key="a1")
    await push(table, {"id": "k0", "owner": bob.name, "n": 2}, op="replace", key="k0")
    await page.evaluate("() => { window.offline = false; }")
    await page.wait_for_function("() => window.flow.state === 'open'", timeout=10_000)
    await push(table, {"id": "a3", "owner": alice.name})
    await page.wait_for_function("() => window.got.some((e) => e.new_val?.id === 'a3')")

    got = summary(await page.evaluate("() => window.got"))
    assert got == [
        ("snapshot", (), 0),  # the table did not exist yet
        ("change", "add", "a1", 1),
        ("change", "add", "a2", 2),
        ("change", "change", "a1", 3),
        ("change", "add", "a3", 4),
    ]  # no resync, no second snapshot, nothing hidden, nothing twice
    resumes = [
        frame["since"]
        for frame in await page.evaluate("() => window.sent")
        if frame.get("action") == "subscribe" and "since" in frame
    ]
    assert resumes and resumes[-1] == position, resumes
