"""The README's "Install and wire it into a project", followed literally: a new project made
by ``django-admin startproject``, the README's own code blocks written into it (read from
README.md, each block's first line names its file), ``migrate`` and a user, the worker and
``changeflow_channels.serve`` as processes, Chromium logging in and opening the page, and the
README's hello-world push reaching the page and the hook's log line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from changeflow_channels.testing.processes import (
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_worker,
)

from ..conftest import save_output

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SECTION = ("## Install and wire it into a project", "## The Python client")
BLOCK = re.compile(r"```(python|html|sh)\n(.*?)```", re.DOTALL)
# The first line of a block names its file: "# myproject/asgi.py" or "<!-- templates/live.html -->".
FILE_NAME = re.compile(r"^(?:# |<!-- )([\w/]+\.(?:py|html))\b")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every code block of the README's install section, in order."""
    text = (REPO / "README.md").read_text()
    start = text.index(SECTION[0])
    end = text.index("\n## ", start + len(SECTION[0]))
    return BLOCK.findall(text[start:end])


def files_of(blocks: list[tuple[str, str]]) -> dict[str, str]:
    files = {}
    for _language, code in blocks:
        match = FILE_NAME.match(code)
        if match:
            files[match.group(1)] = code
    return files


def hello_world(blocks: list[tuple[str, str]]) -> str:
    [code] = [code for language, code in blocks if "push_to_flow(" in code]
    return code


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def project(tmp_path, rethinkdb_target, redis_url):
    """The new project, as the README builds it (the services' addresses are the tests')."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "myproject.settings",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CHANGEFLOW_TEST_REDIS_URL", None)
    run([sys.executable, "-m", "django", "startproject", "myproject", "."], env, tmp_path)
    blocks = readme_blocks()
    files = files_of(blocks)
    assert set(files) >= {
        "myproject/settings.py",
        "myproject/asgi.py",
        "myproject/urls.py",
        "myproject/changeflow.py",
        "templates/live.html",
    }, sorted(files)
    for name, code in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "myproject/settings.py":  # "add at the end"
            code = path.read_text() + "\n" + code
            # The README's addresses, pointed at the test's Redis and RethinkDB.
            code = code.replace("redis://127.0.0.1:6379", redis_url.rsplit("/", 1)[0] + "/2")
            code = code.replace("rethinkdb://admin@127.0.0.1:28015", rethinkdb_target.url)
        path.write_text(code)
    run([sys.executable, "manage.py", "check", "--fail-level", "WARNING"], env, tmp_path)
    run([sys.executable, "manage.py", "migrate"], env, tmp_path)
    superuser = {
        **env,
        "DJANGO_SUPERUSER_USERNAME": "admin",
        "DJANGO_SUPERUSER_PASSWORD": "readme-password",
        "DJANGO_SUPERUSER_EMAIL": "admin@example.com",
    }
    run([sys.executable, "manage.py", "createsuperuser", "--noinput"], superuser, tmp_path)
    return tmp_path, env, blocks


async def test_the_readme_gets_a_new_project_to_a_change_in_the_browser(project, browser):
    directory, env, blocks = project
    worker = start_worker(env=env, cwd=str(directory))
    port = free_port()
    daphne = ManagedProcess(
        [
            sys.executable,
            "-m",
            "changeflow_channels.serve",
            "-p",
            str(port),
            "myproject.asgi:application",
        ],
        env=env,
        cwd=str(directory),
    )
    try:
        worker.wait_for(WORKER_READY, timeout=60)
        daphne.wait_for(r"Listening on TCP address", timeout=60)
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        subscribed = asyncio.Event()  # the page's websocket confirmed its subscription

        def on_frame(frame: object) -> None:
            if '"subscribed"' in str(frame):
                subscribed.set()

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
        await page.goto(f"http://127.0.0.1:{port}/")  # redirected to the admin's login
        await page.fill("#id_username", "admin")
        await page.fill("#id_password", "readme-password")
        await page.click("input[type=submit]")
        await page.wait_for_url(f"http://127.0.0.1:{port}/", timeout=15_000)
        await page.wait_for_function("() => document.title === 'Live'", timeout=15_000)
        await asyncio.wait_for(subscribed.wait(), 15)
        run(
            [sys.executable, "manage.py", "shell", "-c", hello_world(blocks)],
            env,
            directory,
        )
        await page.wait_for_function(
            "() => document.querySelector('#changes').textContent.includes('Hello world')",
            timeout=15_000,
        )
        worker.wait_for(
            r"testdb\.testtable: \{.*'message': 'Hello world'", timeout=15, from_start=True
        )
        assert errors == [], errors
    finally:
        daphne.stop()
        worker.stop()
        save_output("readme-daphne", daphne)
        save_output("readme-worker", worker)
