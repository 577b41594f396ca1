"""The demo, served for real: its worker and Daphne as processes, Chromium driven by Playwright.

Chromium is Debian's (``make test`` installs the ``chromium`` package when it is
missing): Playwright's own browser download cannot work on these machines.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from changeflow_channels.testing.processes import (
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_worker,
)

from ..conftest import save_output

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class DemoStack:
    url: str
    env: dict[str, str]
    port: int
    daphne: ManagedProcess

    def start_daphne(self) -> None:
        self.daphne = ManagedProcess(
            [
                sys.executable,
                "-m",
                "changeflow_channels.serve",  # Daphne, as the README runs it
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "demo.asgi:application",
            ],
            env=self.env,
            cwd=str(DEMO),
        )
        self.daphne.wait_for(r"Listening on TCP address", timeout=60)

    def restart_daphne(self) -> None:
        """The server side drops every websocket, then comes back on the same port."""
        self.daphne.stop()
        self.start_daphne()


@pytest.fixture(scope="session")
def demo_stack(rethinkdb_target, redis_url) -> Iterator[DemoStack]:
    """The demo project's worker and Daphne (the production path of ``make demo``).

    Redis database 1 keeps the demo's channel layer apart from the suite's
    worker, which uses database 0 and follows every table too.
    """
    env = {
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "PYTHONPATH": os.pathsep.join([str(DEMO), str(REPO)]),
        "PYTHONUNBUFFERED": "1",
        "CHANGEFLOW_RETHINKDB": rethinkdb_target.url,
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/1",
        "CHANGEFLOW_DEMO_MODE": "browser tests",
    }
    worker = start_worker(env=env, cwd=str(DEMO))
    port = free_port()
    stack = DemoStack(f"http://127.0.0.1:{port}/", env, port, daphne=None)  # type: ignore[arg-type]
    try:  # stopped however far the start got
        worker.wait_for(WORKER_READY, timeout=60)
        stack.start_daphne()
        yield stack
    finally:
        if stack.daphne is not None:
            stack.daphne.stop()
            save_output("demo-daphne", stack.daphne)
        worker.stop()
        save_output("demo-worker", worker)


@pytest.fixture
async def browser() -> AsyncIterator:
    if shutil.which(CHROMIUM) is None:
        pytest.fail("chromium is not installed (make test installs it with apt-get)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()


@pytest.fixture
async def open_page(browser, demo_stack):
    """Open the demo page on a stream; page errors fail the test."""
    errors: list[str] = []
    pages = []

    async def open_(stream: str):
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(demo_stack.url)
        await page.fill("#stream-input", stream)
        await page.click("#watch-button")
        await page.wait_for_selector("#state[data-state=open]", timeout=10_000)
        # The page has subscribed and loaded the table's documents (or learnt it does not exist yet).
        await page.wait_for_function(
            "() => !document.querySelector('#watch-status').textContent.startsWith('loading')"
        )
        pages.append(page)
        return page

    yield open_
    assert errors == [], errors
