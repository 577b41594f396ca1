"""Idempotent pushes end to end: real worker processes, real Redis, real websockets.

A push with an ``idempotency_key`` is written once however often it is sent, and every
copy is answered as the first was, across restarts of the worker (SIGKILL) and of Redis
(the answer lost): the record lives in RethinkDB. An answer the worker could not send
while Redis was down is sent once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import websockets
from channels_redis.core import RedisChannelLayer
from redis.asyncio import Redis
from rethinkdb import RethinkDB
from rethinkdb.errors import ReqlOpFailedError

from changeflow_channels.push_api import apush_to_flow
from changeflow_channels.pushes import build_push, parse_push
from changeflow_channels.redis_layer import REDIS_ERRORS
from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    ManagedProcess,
    RedisServer,
    free_port,
    start_daphne,
)
from changeflow_channels.worker import push_keys
from changeflow_channels.worker.idempotency import fingerprint, record_id

from ..conftest import save_output
from .conftest import REPO, start_ready_worker
from .helpers import WsClient

pytestmark = pytest.mark.usefixtures("worker")

# Room in each channel for a burst of pushes, and for their answers.
CAPACITY = 1000
COUNTS = ("inserted", "replaced", "unchanged", "deleted", "skipped", "errors")


def answered_alike(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert first["ok"] is second["ok"] is True, (first, second)
    assert first["generated_keys"] == second["generated_keys"], (first, second)
    assert {n: first[n] for n in COUNTS} == {n: second[n] for n in COUNTS}, (first, second)


async def read_table(connect_kwargs: dict[str, Any], database: str, table: str) -> list[dict]:
    def read() -> list[dict]:
        r = RethinkDB()
        with r.connect(**connect_kwargs) as conn:
            if database not in r.db_list().run(conn):
                return []
            if table not in r.db(database).table_list().run(conn):
                return []
            return sorted(r.db(database).table(table).run(conn), key=repr)

    return await asyncio.to_thread(read)


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Until ``await check()`` is truthy (or fail saying ``what`` never happened)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(*REDIS_ERRORS):
            value = await check()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.02)


async def receive_across_outages(layer: Any, channel: str, timeout: float) -> dict[str, Any]:
    """The next message on ``channel``, receiving again while Redis is down."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.wait_for(
                layer.receive(channel), max(0.1, deadline - time.monotonic())
            )
        except REDIS_ERRORS:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class OwnWorker:
    """A worker of the test's own (on its own Redis, following the test's database),
    the test's channel layer client on the same Redis, and the worker's restarts."""

    def __init__(self, env: dict[str, str], redis: RedisServer, name: str) -> None:
        self.env = env
        self.redis = redis
        self.name = name
        self.workers: list[ManagedProcess] = []
        self.layer = RedisChannelLayer(
            hosts=[{"address": redis.url, "socket_timeout": None}], capacity=CAPACITY
        )

    def start(self) -> None:
        self.workers.append(start_ready_worker(self.env))

    @property
    def process(self) -> ManagedProcess:
        return self.workers[-1]

    async def pending(self, channel: str) -> int:
        """Messages waiting in Redis on ``channel`` (channels_redis: a sorted set)."""
        client = Redis.from_url(self.redis.url)
        try:
            return int(await client.zcard("asgi" + channel))
        finally:
            await client.aclose()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.layer.close_pools()
        for index, worker in enumerate(self.workers, 1):
            worker.stop()
            save_output(f"{self.name}-worker{index}", worker)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


@pytest.fixture
async def own_worker(
    request, process_env, own_redis, stream_db
) -> AsyncIterator[Callable[..., OwnWorker]]:
    made: list[OwnWorker] = []
    name = "idempotent-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def make(**extra_env: str) -> OwnWorker:
        env = {
            **process_env,
            "CHANGEFLOW_TEST_REDIS_URL": own_redis.url,
            "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
            "CHANGEFLOW_TEST_HANDLERS": "",
            "CHANGEFLOW_TEST_CAPACITY": str(CAPACITY),
            **extra_env,
        }
        own = OwnWorker(env, own_redis, name)
        made.append(own)
        return own

    yield make
    for own in made:
        await own.close()


# -- the same push twice, through the suite's worker ----------------------------------------


@pytest.mark.parametrize(
    ("op", "data", "key", "expected"),
    [
        ("insert", [{"n": 1}, {"n": 2}], None, {"inserted": 2}),  # keys of ours
        ("insert", {"id": "own", "n": 1}, None, {"inserted": 1}),  # its own key
        ("upsert", {"id": "seed", "n": 2}, None, {"replaced": 1}),
        ("update", {"n": 3}, "seed", {"replaced": 1}),
        ("replace", [{"id": "seed", "m": 1}], None, {"replaced": 1}),
        ("delete", None, "seed", {"deleted": 1}),
    ],
)
async def test_one_push_sent_twice_is_written_once_and_answered_alike(
    layer, stream_db, rethinkdb_target, op, data, key, expected
):
    seeded = await apush_to_flow(
        stream_db, "t", {"id": "seed", "n": 0}, wait=True, channel_layer=layer
    )
    assert seeded is not None and seeded["ok"]
    options = {"op": op, "key": key, "idempotency_key": f"{op}-1", "wait": True}
    first = await apush_to_flow(stream_db, "t", data, channel_layer=layer, id=1, **options)
    after_first = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    second = await apush_to_flow(stream_db, "t", data, channel_layer=layer, id=2, **options)
    assert first is not None and second is not None
    answered_alike(first, second)
    assert {n: first[n] for n in expected} == expected, first
    assert (first["id"], second["id"]) == (1, 2)
    assert await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t") == after_first


async def test_a_browser_push_sent_twice_is_written_once(ws_connect, stream_db, rethinkdb_target):
    client = await ws_connect()
    stream = f"{stream_db}.web"
    frame = {"data": [{"n": 1}], "idempotency_key": "browser-1"}
    first = await client.request("push", stream, **frame)
    second = await client.request("push", stream, **frame)
    assert first["event"] == second["event"] == "pushed", (first, second)
    answered_alike(first, second)
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "web")
    assert [doc["id"] for doc in stored] == first["generated_keys"]


# -- restarts ----------------------------------------------------------------------------------


async def test_a_retry_after_the_worker_was_killed_is_written_once(
    own_worker, stream_db, rethinkdb_target
):
    own = own_worker()
    await asyncio.to_thread(own.start)
    first = await apush_to_flow(
        stream_db, "t", {"n": 1}, idempotency_key="k", wait=True, channel_layer=own.layer
    )
    await asyncio.to_thread(own.process.kill)  # SIGKILL: nothing of it survives
    await asyncio.to_thread(own.start)
    second = await apush_to_flow(
        stream_db, "t", {"n": 1}, idempotency_key="k", wait=True, channel_layer=own.layer
    )
    assert first is not None and second is not None
    answered_alike(first, second)
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    assert [doc["id"] for doc in stored] == first["generated_keys"]


class Answers:
    """Every answer arriving on some reply channels, read in the background."""

    def __init__(self, layer: Any, channels: list[str]) -> None:
        self.received: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self.tasks = [asyncio.ensure_future(self._read(layer, c)) for c in channels]

    async def _read(self, layer: Any, channel: str) -> None:
        while True:
            self.received.append(await layer.receive(channel))
            self.arrived.set()

    def first_by_id(self, since: int = 0) -> dict[Any, dict[str, Any]]:
        found: dict[Any, dict[str, Any]] = {}
        for answer in self.received[since:]:
            found.setdefault(answer["id"], answer)
        return found

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"answers missing after {timeout:g} s")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)

    async def quiet(self, seconds: float) -> None:
        """Until no answer came for ``seconds``."""
        while True:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), seconds)
            except asyncio.TimeoutError:
                return

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


@pytest.mark.parametrize("own_keys", [False, True], ids=["grouped", "alone"])
async def test_pushes_retried_across_a_worker_sigkill_land_once_each(
    own_worker, stream_db, rethinkdb_target, own_keys
):
    """Senders retry, with their keys, every push whose answer they did not get (and a
    few they did): the worker was SIGKILLed in the middle of a burst, whatever each push
    was at (waiting in Redis, held by the worker, written and not recorded...). Pushes
    of documents without keys of their own are written in groups; with, alone."""
    own = own_worker()
    await asyncio.to_thread(own.start)
    replies = ["idem-reply-" + uuid.uuid4().hex for _ in range(10)]
    count = 300

    def data(n: int) -> list[dict[str, Any]]:
        return [{"n": n}, {"id": f"own-{n}", "n": n}] if own_keys else [{"n": n}, {"n": n}]

    messages = [
        build_push(
            stream_db,
            "t",
            data(n),
            reply_channel=replies[n % len(replies)],
            id=n,
            idempotency_key=f"burst-{n}",
        )
        for n in range(count)
    ]
    answers = Answers(own.layer, replies)
    try:
        for message in messages:
            await own.layer.send("changeflow", message)
        await answers.until(lambda: len(answers.first_by_id()) >= count // 3, 30)
        await asyncio.to_thread(own.process.kill)
        # Answers sent before the kill may still come; what was not answered is
        # still in Redis, or was lost with the worker.
        await answers.quiet(0.5)
        before = answers.first_by_id()
        seen = len(answers.received)
        await asyncio.to_thread(own.start)
        retried = [m for m in messages if m["id"] not in before or m["id"] % 10 == 0]
        for message in retried:
            await own.layer.send("changeflow", message)
        wanted = {m["id"] for m in retried}
        await answers.until(lambda: wanted <= set(answers.first_by_id(seen)), 60)
        after = answers.first_by_id(seen)
    finally:
        answers.stop()
    per_push = 1 if own_keys else 2
    for n, answer in after.items():
        assert answer["ok"] is True, answer
        assert answer["inserted"] == 2 and len(answer["generated_keys"]) == per_push, answer
        if n in before:
            answered_alike(before[n], answer)
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    assert sorted(doc["n"] for doc in stored) == sorted([*range(count), *range(count)])
    keys = [doc["id"] for doc in stored if not str(doc["id"]).startswith("own-")]
    answered = {**before, **after}
    assert sorted(keys) == sorted(k for a in answered.values() for k in a["generated_keys"])


async def test_a_push_whose_answer_redis_lost_is_retried_once(
    own_worker, stream_db, rethinkdb_target
):
    """Issue 14, case 3: the push is written and answered, the answer waits in Redis,
    Redis restarts (and forgets it). The sender retries with its key: one document,
    and an answer ``ok`` with its key."""
    own = own_worker()
    await asyncio.to_thread(own.start)
    reply = "idem-reply-" + uuid.uuid4().hex
    message = build_push(
        stream_db, "t", {"n": 1}, reply_channel=reply, id="lost", idempotency_key="case-3"
    )
    await own.layer.send("changeflow", message)
    await eventually(lambda: own.pending(reply), 20, "the answer waiting in Redis")
    await asyncio.to_thread(own.redis.restart)  # the answer is lost with Redis's memory
    retried = await apush_to_flow(
        stream_db,
        "t",
        {"n": 1},
        idempotency_key="case-3",
        wait=True,
        retries=5,
        timeout=5,
        channel_layer=own.layer,
    )
    assert retried is not None and retried["ok"] is True
    assert retried["inserted"] == 1
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    assert [doc["id"] for doc in stored] == retried["generated_keys"]


async def test_the_helper_retries_with_its_key_until_the_worker_answers(
    own_worker, stream_db, rethinkdb_target
):
    """The first attempt gets no answer in time (the worker is stopped); the helper
    sends the push again with the same key: both copies reach the worker, one is written."""
    own = own_worker()
    await asyncio.to_thread(own.start)
    await asyncio.to_thread(own.process.signal, 19)  # SIGSTOP
    try:
        task = asyncio.ensure_future(
            apush_to_flow(
                stream_db,
                "t",
                {"n": 1},
                idempotency_key="slow",
                wait=True,
                retries=4,
                timeout=1.0,
                channel_layer=own.layer,
            )
        )
        await eventually(_at_least(own, "changeflow", 2), 20, "the push sent twice")
    finally:
        await asyncio.to_thread(own.process.signal, 18)  # SIGCONT
    answer = await asyncio.wait_for(task, 60)
    assert answer is not None and answer["ok"] is True and answer["inserted"] == 1
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    assert [doc["id"] for doc in stored] == answer["generated_keys"]


def _at_least(own: OwnWorker, channel: str, count: int) -> Callable[[], Any]:
    async def check() -> bool:
        return await own.pending(channel) >= count

    return check


async def test_an_answer_is_delivered_once_redis_is_back(own_worker, faulty_rethinkdb, stream_db):
    """The worker writes a push while Redis is down (RethinkDB held the write until
    then): the answer cannot be sent, and is sent once Redis is back."""
    own = own_worker(CHANGEFLOW_TEST_RETHINKDB_URL=faulty_rethinkdb.url)
    await asyncio.to_thread(own.start)
    warm = await apush_to_flow(
        stream_db, "t", {"n": 0}, idempotency_key="warm", wait=True, channel_layer=own.layer
    )
    assert warm is not None and warm["ok"]
    reply = "idem-reply-" + uuid.uuid4().hex
    await asyncio.to_thread(faulty_rethinkdb.freeze)
    try:
        await own.layer.send(
            "changeflow", build_push(stream_db, "t", {"n": 1}, reply_channel=reply, id="late")
        )
        await eventually(_none_left(own, "changeflow"), 10, "the worker taking the push")
        await asyncio.to_thread(own.redis.stop)
    finally:
        await asyncio.to_thread(faulty_rethinkdb.thaw)
    connect_kwargs = {"host": faulty_rethinkdb.host, "port": faulty_rethinkdb.port}

    async def written() -> bool:
        return len(await read_table(connect_kwargs, stream_db, "t")) == 2

    await eventually(written, 20, "the push written while Redis is down")
    # The worker tried to answer, and could not: Redis is down.
    await asyncio.to_thread(own.process.wait_for, "could not answer on " + re.escape(reply), 20)
    await asyncio.to_thread(own.redis.start)
    answer = await receive_across_outages(own.layer, reply, 30)
    assert (answer["id"], answer["ok"], answer["inserted"]) == ("late", True, 1), answer


def _none_left(own: OwnWorker, channel: str) -> Callable[[], Any]:
    async def check() -> bool:
        return await own.pending(channel) == 0

    return check


@pytest.mark.parametrize("written", [True, False], ids=["after-the-write", "before-the-write"])
async def test_a_worker_finds_what_a_killed_worker_left_and_writes_it_once(
    stream_db, rethinkdb_target, layer, written
):
    """A worker killed after recording the push as pending (and, or not, after writing
    its documents) leaves that record behind; the retry, on any worker, lands once
    with the keys recorded."""
    request = parse_push(
        {
            "database": stream_db,
            "table": "t",
            "data": [{"n": 1}, {"id": "own", "n": 2}],
            "idempotency_key": "crashed",
        }
    )
    ours = str(uuid.uuid4())
    r = RethinkDB()

    def leave_what_a_killed_worker_leaves() -> None:
        with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
            if written:
                r.db_create(stream_db).run(conn)
                r.db(stream_db).table_create("t").run(conn)
                r.db(stream_db).table("t").insert(
                    [{"n": 1, "id": ours}, {"id": "own", "n": 2}]
                ).run(conn)
            if push_keys.DATABASE not in r.db_list().run(conn):
                r.db_create(push_keys.DATABASE).run(conn)
            if push_keys.TABLE not in r.db(push_keys.DATABASE).table_list().run(conn):
                r.db(push_keys.DATABASE).table_create(push_keys.TABLE).run(conn)
            r.db(push_keys.DATABASE).table(push_keys.TABLE).insert(
                {
                    "id": record_id(stream_db, "t", "crashed"),
                    "at": time.time(),
                    "state": push_keys.PENDING,
                    "fingerprint": fingerprint(request),
                    "pk": "id",
                    "generated": [ours],
                    "attempt": "a killed worker's",
                }
            ).run(conn)

    await asyncio.to_thread(leave_what_a_killed_worker_leaves)
    answer = await apush_to_flow(
        stream_db,
        "t",
        request.data,
        idempotency_key="crashed",
        wait=True,
        channel_layer=layer,
    )
    assert answer is not None
    assert (answer["ok"], answer["inserted"], answer["generated_keys"]) == (True, 2, [ours])
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "t")
    assert sorted(doc["id"] for doc in stored) == sorted([ours, "own"])


async def test_a_browser_push_retried_on_another_daphne_is_written_once(
    process_env, stream_db, rethinkdb_target
):
    """A client pushes, and its Daphne is SIGKILLed before the client read the answer;
    it reconnects to another Daphne and sends the push again with its key: one
    document, answered ok with its key."""
    stream = f"{stream_db}.daphne"
    frame = {"action": "push", "stream": stream, "data": {"n": 1}, "idempotency_key": "d-1"}
    daphnes: list[ManagedProcess] = []

    async def connect() -> WsClient:
        port = free_port()
        daphne = start_daphne("tests.asgi:application", port, env=process_env, cwd=str(REPO))
        daphnes.append(daphne)
        await asyncio.to_thread(daphne.wait_for, DAPHNE_READY, 60)
        url = f"ws://127.0.0.1:{port}/ws/changeflow/"
        origin = f"http://127.0.0.1:{port}"
        return WsClient(await websockets.connect(url, open_timeout=10, origin=origin))

    try:
        first = await connect()
        await first.send({**frame, "id": 1})

        async def landed() -> bool:
            try:
                return bool(
                    await read_table(rethinkdb_target.connect_kwargs(), stream_db, "daphne")
                )
            except ReqlOpFailedError:  # a real server's table just made, not ready yet
                return False

        await eventually(landed, 20, "the first push written")  # its answer is never read
        await asyncio.to_thread(daphnes[0].kill)
        second = await connect()
        answer = await second.request(
            "push", stream, **{k: frame[k] for k in ("data", "idempotency_key")}
        )
        await second.connection.close()
    finally:
        for n, daphne in enumerate(daphnes, 1):
            daphne.stop()
            save_output(f"idempotent-daphne{n}", daphne)
    assert answer["event"] == "pushed" and answer["inserted"] == 1, answer
    stored = await read_table(rethinkdb_target.connect_kwargs(), stream_db, "daphne")
    assert [doc["id"] for doc in stored] == answer["generated_keys"]
