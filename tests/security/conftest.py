"""The security tests' site: Redis, a worker and a Daphne wired as the README says,
with ``RulesPolicy`` and the ``OwnOrders`` row rule (tests/security/settings.py),
and users in a sqlite file that the tests change through ``tests.security.admin``
(a subprocess: the same code paths a site's administrator would use).

Everything is real: Redis, the worker, Daphne, RethinkDB (the test server or, with
``CHANGEFLOW_TEST_RETHINKDB_BIN``, a real one) and websocket clients."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from rethinkdb import RethinkDB

from changeflow_channels import apush_to_flow
from changeflow_channels.redis_layer import RedisChannelLayer
from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
)

from ..bridge.helpers import WsClient
from ..conftest import save_output

REPO = Path(__file__).resolve().parents[2]
DATABASE = "secdb"  # the one database the site's worker follows
_names = itertools.count(1)


@dataclass
class Site:
    """The running site: its processes, addresses and administration."""

    env: dict[str, str]
    worker: ManagedProcess
    daphne: ManagedProcess
    port: int
    rethinkdb: dict[str, Any]  # connect() arguments for the driver
    extra: list[ManagedProcess] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/changeflow/"

    def admin(self, *args: str) -> dict[str, Any]:
        """Run ``python -m tests.security.admin *args`` on the site's database."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.security.admin", *args],
            env={**os.environ, **self.env},
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise RuntimeError(f"admin {args} failed: {done.stderr}")
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return answer

    def worker_output(self) -> str:
        return self.worker.output

    def daphne_output(self) -> str:
        return self.daphne.output + "".join(process.output for process in self.extra)


@dataclass
class SiteUser:
    name: str
    id: str
    password: str
    session: str  # the value of the ``sessionid`` cookie of a logged-in browser
    token: str  # ``make_token(user)``


@pytest.fixture(scope="session")
def site(
    rethinkdb_target: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("security-site")
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.security.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHANGEFLOW_TEST_RETHINKDB_URL": rethinkdb_target.url,
        "CHANGEFLOW_TEST_REDIS_URL": redis_url,
        "CHANGEFLOW_TEST_REDIS_PREFIX": "security",
        "CHANGEFLOW_TEST_WATCH": f"{DATABASE}.*",
        "CHANGEFLOW_TEST_DB_PATH": str(directory / "site.sqlite3"),
    }
    site_env = {**os.environ, **env}
    subprocess.run(
        [sys.executable, "-m", "tests.security.admin", "migrate"],
        env=site_env,
        cwd=str(REPO),
        check=True,
        timeout=120,
    )
    worker = start_worker(env=site_env, cwd=str(REPO))
    port = free_port()
    daphne = start_daphne("tests.security.asgi:application", port, env=site_env, cwd=str(REPO))
    try:
        worker.wait_for(WORKER_READY, timeout=60)
        daphne.wait_for(DAPHNE_READY, timeout=60)
        site = Site(env, worker, daphne, port, rethinkdb_target.connect_kwargs())
        yield site
    finally:
        daphne.stop()
        worker.stop()
        save_output("security-daphne", daphne)
        save_output("security-worker", worker)
    for index, process in enumerate(site.extra):
        process.stop()
        save_output(f"security-daphne-{index + 1}", process)


@pytest.fixture
async def site_layer(site: Site, redis_url: str) -> AsyncIterator[RedisChannelLayer]:
    """A channel layer client in the site's namespace (server-side code of the site)."""
    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "socket_timeout": None}],
        prefix=site.env["CHANGEFLOW_TEST_REDIS_PREFIX"],
    )
    yield layer
    await layer.close_pools()


@pytest.fixture
def push(site_layer: RedisChannelLayer) -> Callable[..., Any]:
    """``await push(table, data, **options)``: a server-side push into ``secdb.<table>``,
    waited for; returns the worker's answer (``PushFailed`` when refused)."""

    async def send(table: str, data: Any, **options: Any) -> dict[str, Any] | None:
        return await apush_to_flow(
            DATABASE, table, data, wait=True, channel_layer=site_layer, **options
        )

    return send


@pytest.fixture
def make_user(site: Site) -> Callable[..., SiteUser]:
    """Create a user with a logged-in session and a token: ``make_user(staff=False)``."""

    def make(staff: bool = False) -> SiteUser:
        name = f"user{next(_names)}_{uuid.uuid4().hex[:6]}"
        args = ["user", name] + (["--staff"] if staff else [])
        return SiteUser(**site.admin(*args))

    return make


@pytest.fixture
def table(site: Site) -> Iterator[str]:
    """A table name of the test's own in ``secdb`` (created by the first push), dropped after."""
    name = "t_" + uuid.uuid4().hex[:10]
    yield name
    r = RethinkDB()
    with r.connect(**site.rethinkdb) as conn:
        if DATABASE in r.db_list().run(conn) and name in r.db(DATABASE).table_list().run(conn):
            r.db(DATABASE).table_drop(name).run(conn)


_DEFAULT = object()


def handshake(
    site: Site,
    *,
    user: SiteUser | None = None,
    via: str = "session",
    origin: Any = _DEFAULT,
    headers: dict[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``websockets.connect`` keyword arguments and extra headers of a client:
    ``via="session"`` sends the user's session cookie, ``via="token"`` the token as a
    Bearer header, ``via="query"`` the token in the URL (added by ``connect``)."""
    extra: dict[str, str] = dict(headers or {})
    if user is not None and via == "session":
        extra["Cookie"] = f"sessionid={user.session}"
    if user is not None and via == "token":
        extra["Authorization"] = f"Bearer {user.token}"
    kwargs: dict[str, Any] = {"open_timeout": 10, "additional_headers": extra}
    chosen = site.origin if origin is _DEFAULT else origin
    if chosen is not None:
        kwargs["origin"] = chosen
    return kwargs, extra


@pytest.fixture
async def connect(site: Site) -> AsyncIterator[Callable[..., Any]]:
    """Open a websocket client to the site (or to ``url``); all are closed after the test.

    ``connect(user=..., via="session"|"token"|"query", origin=<site's>|None|"http://…",
    url=None, headers=None, acks=True)`` -> ``WsClient``; a refused handshake raises
    ``websockets.InvalidStatus``."""
    opened: list[Any] = []

    async def open_client(
        *,
        user: SiteUser | None = None,
        via: str = "session",
        origin: Any = _DEFAULT,
        url: str | None = None,
        headers: dict[str, str] | None = None,
        acks: bool = True,
    ) -> WsClient:
        kwargs, _ = handshake(site, user=user, via=via, origin=origin, headers=headers)
        target = url or site.ws_url
        if user is not None and via == "query":
            target += ("&" if "?" in target else "?") + f"token={user.token}"
        connection = await websockets.connect(target, **kwargs)
        opened.append(connection)
        return WsClient(connection, acks=acks)

    yield open_client
    for connection in opened:
        with contextlib.suppress(Exception):
            await connection.close()


@pytest.fixture
def start_daphne_with(site: Site) -> Callable[..., str]:
    """``start_daphne_with(**env)``: another Daphne of the site, with extra environment
    (e.g. ``CHANGEFLOW_TEST_TOKEN_MAX_AGE="6"``); returns its websocket URL. It runs
    until the end of the session (its output is saved)."""

    def start(**extra_env: str) -> str:
        port = free_port()
        process = start_daphne(
            "tests.security.asgi:application",
            port,
            env={**os.environ, **site.env, **extra_env},
            cwd=str(REPO),
        )
        site.extra.append(process)
        process.wait_for(DAPHNE_READY, timeout=60)
        return f"ws://127.0.0.1:{port}/ws/changeflow/"

    return start
