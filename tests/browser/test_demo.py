"""The demo in a real browser: two windows, pushes, direct writes, a server that drops the websocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import websockets

from changeflow_channels.testing.processes import ManagedProcess, free_port

from ..bridge.helpers import WsClient
from .conftest import DEMO, REPO

pytestmark = pytest.mark.slow

OUTPUT = REPO / "test-output"


def row(key: str) -> str:
    return f"#documents tr[data-key='{json.dumps(key)}']"


async def rows_with(page, text: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(
        "t => [...document.querySelectorAll('#documents tbody tr')].some(r => r.textContent.includes(t))",
        arg=text,
        timeout=timeout,
    )


def write_direct(url: str, stream: str, message: str) -> None:
    """demo/write_direct.py: a change made with the driver, not through the bridge."""
    subprocess.run(
        [
            sys.executable,
            str(DEMO / "write_direct.py"),
            "--url",
            url,
            "--stream",
            stream,
            "--message",
            message,
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )


async def test_a_push_from_one_window_appears_in_both(open_page, demo_stack):
    stream = f"web_{uuid.uuid4().hex[:8]}.messages"
    first, second = await open_page(stream), await open_page(stream)
    await first.fill("#push-data", json.dumps({"id": "hello", "message": "Hello world"}))
    await first.click("#push-button")
    await first.wait_for_function(
        "() => document.querySelector('#push-result').textContent.includes('\"inserted\": 1')"
    )
    # The counts come first, above the JSON the box may cut.
    assert (await first.inner_text("#push-result")).startswith(
        "inserted 1 · replaced 0 · unchanged 0 · deleted 0 · skipped 0 · errors 0"
    )
    for page in (first, second):
        await page.wait_for_selector(row("hello"), timeout=10_000)
        assert "Hello world" in await page.inner_text(row("hello"))
        # The status line counts the documents the table has now, as the badge does.
        await page.wait_for_function(
            "() => document.querySelector('#watch-status').textContent.includes(': 1 document, live')",
            timeout=10_000,
        )
    # An update and a delete travel the same way.
    await second.fill("#push-data", json.dumps({"message": "changed"}))
    await second.select_option("#push-op", "update")
    await second.fill("#push-key", "hello")
    await second.click("#push-button")
    for page in (first, second):
        await rows_with(page, "changed")
    OUTPUT.mkdir(exist_ok=True)
    await first.screenshot(path=str(OUTPUT / "demo.png"), full_page=True)
    await first.select_option("#push-op", "delete")
    await first.fill("#push-key", "hello")
    await first.click("#push-button")
    for page in (first, second):
        await page.wait_for_selector(row("hello"), state="detached", timeout=10_000)
        assert await page.inner_text("#doc-count") == "0"
        assert ": 0 documents, live" in await page.inner_text("#watch-status")


async def test_a_bad_document_shows_the_error_instead_of_failing_silently(open_page):
    page = await open_page(f"web_{uuid.uuid4().hex[:8]}.messages")
    await page.fill("#push-data", '"just a string"')
    await page.click("#push-button")
    await page.wait_for_selector("#push-result.error", timeout=10_000)
    assert "bad_request" in await page.inner_text("#push-result")


async def test_a_change_written_with_the_driver_appears(open_page, demo_stack):
    stream = f"web_{uuid.uuid4().hex[:8]}.direct"
    pages = [await open_page(stream), await open_page(stream)]
    await asyncio.to_thread(
        write_direct, demo_stack.env["CHANGEFLOW_RETHINKDB"], stream, "from the driver"
    )
    for page in pages:
        await rows_with(page, "from the driver")


async def test_the_client_reconnects_after_the_server_drops_the_websocket(open_page, demo_stack):
    stream = f"web_{uuid.uuid4().hex[:8]}.reconnect"
    page = await open_page(stream)
    await asyncio.to_thread(demo_stack.daphne.stop)
    await page.wait_for_selector("#state[data-state=reconnecting]", timeout=10_000)
    await asyncio.to_thread(demo_stack.start_daphne)
    await page.wait_for_selector("#state[data-state=open]", timeout=30_000)
    await asyncio.to_thread(
        write_direct, demo_stack.env["CHANGEFLOW_RETHINKDB"], stream, "after the drop"
    )
    await rows_with(page, "after the drop", timeout=15_000)


@pytest.mark.parametrize(
    ("flags", "layer_line"),
    [
        ([], r"Channel layer: a redis-server of its own"),
        (["--no-redis"], r"Channel layer: the in-memory channel layer"),
    ],
)
async def test_make_demo_launcher_serves_the_bridge_and_stops_on_ctrl_c(flags, layer_line):
    """demo/run.py, self-contained: its own ReQL test server, and its own redis-server
    (worker and Daphne as processes) or the in-memory layer (both in one process)."""
    port = free_port()
    launcher = ManagedProcess(
        [sys.executable, str(DEMO / "run.py"), "--port", str(port), *flags],
        cwd=str(REPO),
        new_session=True,  # a terminal of its own: Ctrl-C goes to its whole process group
    )
    try:
        await asyncio.to_thread(launcher.wait_for, layer_line, 60)
        await asyncio.to_thread(
            launcher.wait_for, rf"Demo running at http://127\.0\.0\.1:{port}/", 60
        )
        url = f"ws://127.0.0.1:{port}/ws/changeflow/"
        async with websockets.connect(url, origin=f"http://127.0.0.1:{port}") as connection:
            client = WsClient(connection)
            await client.subscribe("launcher.check")
            pushed = await client.request("push", "launcher.check", data={"via": "launcher"})
            assert pushed["event"] == "pushed", pushed
            [change] = await client.changes("launcher.check", 1)
            assert change["new_val"]["via"] == "launcher"
        interrupted = len(launcher.lines)
        os.killpg(launcher.process.pid, signal.SIGINT)  # Ctrl-C, as a terminal sends it
        assert await asyncio.to_thread(launcher.process.wait, 30) == 0
        # A clean, quiet stop: nobody notices another process gone before itself.
        await asyncio.to_thread(launcher._reader.join, 10)
        after = launcher.lines[interrupted:]
        assert not [line for line in after if "WARNING" in line or "ERROR" in line], after
    finally:
        launcher.kill()
