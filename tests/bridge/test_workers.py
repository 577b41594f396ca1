"""Several workers (issue 8): one reader per table, failover, a later worker's share, status.

One cluster for the module: three worker processes and a Daphne, on the suite's
ReQL test server and Redis, in a channel-layer namespace of their own, watching
a database of six tables, with a lease time of ``LEASE`` seconds. The tests run
in order and each leaves three workers alive:

- under a steady stream of writes to every table, each change reaches the
  channel-layer groups exactly once (a raw group member counts what the
  workers send, so no consumer-side deduplication can hide a duplicate) and
  a websocket subscriber exactly once; the tables are spread two per worker;
- snapshot requests reach the worker that follows the table, whichever worker
  receives them;
- SIGKILL of a worker: its tables are followed again within the lease time
  (plus one renewal interval), and subscribers get ``resync``;
- a worker started later takes its share;
- ``changeflow status`` (text and ``--json``) shows that picture.

Measured failover times are logged and written to ``test-output/workers.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from channels_redis.core import RedisChannelLayer
from redis.asyncio import Redis

from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    WORKER_READY,
    ManagedProcess,
    free_port,
    start_daphne,
    start_worker,
)
from changeflow_channels.worker.leases import RedisTarget, read_registry

from ..conftest import save_output
from ..polling import poll_until
from .conftest import REPO
from .helpers import Acks

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

LEASE = 3.0
TICK = LEASE / 5
TABLES = [f"t{n}" for n in range(6)]
RESULTS = REPO / "test-output" / "workers.json"


class Cluster:
    """Workers and a Daphne sharing one namespace; blocking methods (processes)."""

    def __init__(self, env: dict[str, str], prefix: str, database: str) -> None:
        self.env = env
        self.prefix = prefix
        self.database = database
        self.port = free_port()
        self.workers: list[ManagedProcess] = []
        self.daphne: ManagedProcess | None = None
        self.figures: dict[str, Any] = {"lease_time": LEASE}

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/changeflow/"

    def start(self, workers: int) -> None:
        spawned = [self.spawn_worker() for _ in range(workers)]
        self.daphne = start_daphne("tests.asgi:application", self.port, env=self.env, cwd=str(REPO))
        for worker in spawned:
            worker.wait_for(WORKER_READY, timeout=60)
        self.daphne.wait_for(DAPHNE_READY, timeout=60)

    def spawn_worker(self) -> ManagedProcess:
        worker = start_worker(env=self.env, cwd=str(REPO))
        self.workers.append(worker)
        return worker

    def worker_id(self, worker: ManagedProcess) -> str:
        return worker.wait_for(r"changeflow worker (\w+): sharing tables", 30, from_start=True)[1]

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", "changeflow", "status", *args],
            env={**os.environ, **self.env},
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def stop(self) -> None:
        for n, worker in enumerate(self.workers, 1):
            worker.stop()
            save_output(f"workers-worker{n}", worker)
        if self.daphne is not None:
            self.daphne.stop()
            save_output("workers-daphne", self.daphne)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(self.figures, indent=2))


@pytest.fixture(scope="module")
def cluster(process_env, rethinkdb_target) -> Iterator[Cluster]:
    from rethinkdb import RethinkDB

    database = "w_" + uuid.uuid4().hex[:10]
    r = RethinkDB()
    with r.connect(**rethinkdb_target.connect_kwargs()) as conn:
        r.db_create(database).run(conn)
        for table in TABLES:
            r.db(database).table_create(table).run(conn)
        r.db(database).wait().run(conn)
    prefix = "wk" + uuid.uuid4().hex[:8]
    env = {
        **process_env,
        "CHANGEFLOW_TEST_REDIS_PREFIX": prefix,
        "CHANGEFLOW_TEST_WATCH": f"{database}.*",
        "CHANGEFLOW_TEST_HANDLERS": "",
        "CHANGEFLOW_TEST_LEASE_TIME": str(LEASE),
        # Its client asks for 12 snapshots in quick rounds (a round waits for the last).
        "CHANGEFLOW_TEST_SYNC_BURST": "20",
        # The raw group member reads in the test's process, which a busy machine can stall
        # for a second (120 changes): past the default 100 the workers would skip it, as
        # they skip any full channel (a real consumer then gets a resync).
        "CHANGEFLOW_TEST_CAPACITY": "5000",
    }
    cluster = Cluster(env, prefix, database)
    try:
        cluster.start(3)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def layer_and_registry(cluster, redis_url) -> AsyncIterator[tuple[Any, Any]]:
    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "socket_timeout": None}], prefix=cluster.prefix, capacity=5000
    )
    redis = Redis.from_url(redis_url)
    yield layer, RedisTarget(redis, f"{cluster.prefix}:changeflow:changeflow", redis_url)
    await redis.aclose()
    await layer.close_pools()


# -- what the test side sees ---------------------------------------------------------------------


async def holdings(target: RedisTarget) -> dict[str, list[str]]:
    """Worker id -> the tables it holds a lease of (from Redis)."""
    registry = await read_registry(target)
    held: dict[str, list[str]] = {worker: [] for worker in registry["workers"]}
    for stream, lease in registry["leases"].items():
        held.setdefault(lease["holder"], []).append(stream)
    return {worker: sorted(streams) for worker, streams in held.items()}


async def wait_holdings(target: RedisTarget, predicate: Any, timeout: float) -> dict:
    return await poll_until(
        lambda: holdings(target), predicate, timeout, lambda held: f"leases never got there: {held}"
    )


def spread_evenly(live: int) -> Any:
    def check(held: dict[str, list[str]]) -> bool:
        counts = [len(streams) for streams in held.values()]
        return len(held) == live and sum(counts) == len(TABLES) and max(counts) - min(counts) <= 1

    return check


class GroupMember:
    """A raw member of every table's group: what the workers send, batches unpacked."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.messages: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def join(self, streams: list[str]) -> None:
        channel = await self.layer.new_channel()
        for stream in streams:
            await self.layer.group_add(stream, channel)
        self.task = asyncio.ensure_future(self._read(channel))

    async def _read(self, channel: str) -> None:
        while True:
            message = await self.layer.receive(channel)
            if message["type"] == "changeflow.batch":
                self.messages.extend(message["changes"])
            elif message["type"] == "changeflow.change":
                self.messages.append(message)

    def leave(self) -> None:
        if self.task is not None:
            self.task.cancel()


class Subscriber:
    """A websocket client subscribed to every table, keeping every event."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.connection: Any = None
        self.task: asyncio.Task[None] | None = None
        self.answers: dict[Any, asyncio.Future[dict[str, Any]]] = {}

    async def connect(self, cluster: Cluster) -> None:
        origin = f"http://127.0.0.1:{cluster.port}"
        self.connection = await websockets.connect(
            cluster.url, open_timeout=10, origin=origin, max_size=None
        )
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        acks = Acks(self.connection)  # as every client must (docs/protocol.md, "Flow control")
        async for raw in self.connection:
            await acks.read()
            frame = json.loads(raw)
            for event in frame["events"] if frame.get("event") == "batch" else [frame]:
                self.events.append(event)
                future = self.answers.pop(event.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(event)

    async def request(self, request_id: Any, **frame: Any) -> dict[str, Any]:
        future = asyncio.get_running_loop().create_future()
        self.answers[request_id] = future
        await self.connection.send(json.dumps({**frame, "id": request_id}))
        return await asyncio.wait_for(future, 15)

    def of(self, kind: str, stream: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == kind and (stream is None or e.get("stream") == stream)
        ]

    async def close(self) -> None:
        await self.connection.close()
        if self.task is not None:
            self.task.cancel()


class Writer:
    """Inserts ``{"id": "<table>-<tag>-<n>"}`` round-robin into every table through the
    channel layer (any worker takes them), ``rate`` per second in all."""

    def __init__(self, layer: Any, database: str, rate: float = 90.0) -> None:
        self.layer = layer
        self.database = database
        self.rate = rate
        self.sent: dict[str, str] = {}  # doc id -> stream
        self.accepted: set[str] = set()
        self.n = 0
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.tag = uuid.uuid4().hex[:6]  # document ids of this writer's own
        self.stopping = False

    async def start(self) -> None:
        self.reply = await self.layer.new_channel()
        self.reader = asyncio.ensure_future(self._answers())
        self.task = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stopping:
            table = TABLES[self.n % len(TABLES)]
            doc_id = f"{table}-{self.tag}-{self.n}"
            self.n += 1
            self.sent[doc_id] = f"{self.database}.{table}"
            await self.layer.send(
                "changeflow",
                {
                    "type": "changeflow.push",
                    "database": self.database,
                    "table": table,
                    "data": {"id": doc_id},
                    "reply_channel": self.reply,
                    "id": doc_id,
                },
            )
            next_at += 1 / self.rate
            await asyncio.sleep(max(0.0, next_at - loop.time()))  # the writer's pace

    async def _answers(self) -> None:
        while True:
            answer = await self.layer.receive(self.reply)
            assert answer["ok"], answer
            self.accepted.add(answer["id"])

    async def stop(self, timeout: float = 15.0, *, all_answered: bool = True) -> None:
        """Stop writing; wait for the answers (a killed worker never answers what it took)."""
        self.stopping = True
        if self.task is not None:
            await self.task
        if all_answered:
            await wait_for(lambda: len(self.accepted) >= len(self.sent), timeout, "the answers")
        if self.reader is not None:
            self.reader.cancel()


def ids_of(messages: list[dict[str, Any]]) -> Counter[str]:
    return Counter(
        (m["change"] if "change" in m else m)["new_val"]["id"]
        for m in messages
        if ((m["change"] if "change" in m else m).get("new_val") or {}).get("id")
    )


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def streams(cluster: Cluster) -> list[str]:
    return [f"{cluster.database}.{table}" for table in TABLES]


# -- the tests ----------------------------------------------------------------------------------


async def test_three_workers_spread_the_tables_and_deliver_each_change_exactly_once(
    cluster, layer_and_registry
):
    layer, registry = layer_and_registry
    held = await wait_holdings(registry, spread_evenly(3), timeout=15)
    assert sorted(len(s) for s in held.values()) == [2, 2, 2], held
    ids = {cluster.worker_id(w) for w in cluster.workers}
    assert set(held) == ids  # the three processes, each following two tables
    member = GroupMember(layer)
    await member.join(streams(cluster))
    client = Subscriber()
    await client.connect(cluster)
    for stream in streams(cluster):
        assert (await client.request(stream, action="subscribe", stream=stream))[
            "event"
        ] == "subscribed"
    writer = Writer(layer, cluster.database)
    await writer.start()
    await wait_for(lambda: writer.n >= 360, 20, "360 pushes")
    await writer.stop()
    expected = set(writer.sent)
    await wait_for(lambda: set(ids_of(member.messages)) >= expected, 30, "every change sent")
    await wait_for(
        lambda: set(ids_of(client.of("change"))) >= expected, 15, "every change received"
    )
    await asyncio.sleep(TICK)  # a late duplicate would arrive meanwhile
    member.leave()
    await client.close()
    sent = ids_of(member.messages)
    received = ids_of(client.of("change"))
    assert [i for i, n in sent.items() if n > 1] == []  # nothing sent twice to a group
    assert [i for i, n in received.items() if n > 1] == []  # nothing received twice
    assert set(sent) == expected and set(received) == expected
    assert client.of("resync") == []
    positions = Counter((m["epoch"], m["seq"]) for m in member.messages)
    assert max(positions.values()) == 1
    assert len({m["epoch"] for m in member.messages}) == len(TABLES)  # one reader per table


async def test_snapshot_requests_reach_the_worker_following_the_table(cluster, layer_and_registry):
    """Sync requests arrive on the shared channel: at any worker. Each snapshot must
    still be exact, at the epoch of the table's one reader."""
    layer, _ = layer_and_registry
    member = GroupMember(layer)
    await member.join(streams(cluster))
    client = Subscriber()
    await client.connect(cluster)
    for stream in streams(cluster):
        reply = await layer.new_channel()
        await layer.send(
            "changeflow",
            {
                "type": "changeflow.push",
                "database": cluster.database,
                "table": stream.split(".")[1],
                "data": {"id": f"snap-{stream}"},
                "reply_channel": reply,
            },
        )
        assert (await asyncio.wait_for(layer.receive(reply), 10))["ok"]
    await wait_for(lambda: len(member.messages) >= len(TABLES), 10, "the marker changes")
    epochs = {f"{m['database']}.{m['table']}": m["epoch"] for m in member.messages}
    for round_ in range(3):  # several requests per table: most go to another worker first
        for stream in streams(cluster):
            await client.request(
                f"{stream}/{round_}", action="subscribe", stream=stream, snapshot=True
            )
        # A subscription made again replaces the one before, whose snapshot (if still
        # on its way) is then not sent: each round's snapshots first.
        wanted = (round_ + 1) * len(TABLES)
        await wait_for(lambda n=wanted: len(client.of("snapshot")) >= n, 15, f"{wanted} snapshots")
    member.leave()
    await client.close()
    for snapshot in client.of("snapshot"):
        stream = snapshot["stream"]
        assert snapshot["epoch"] == epochs[stream], snapshot
        assert f"snap-{stream}" in {doc["id"] for doc in snapshot["documents"]}
    assert client.of("resync") == []


async def test_sigkill_of_a_worker_moves_its_tables_within_the_lease_time_and_subscribers_resync(
    cluster, layer_and_registry
):
    layer, registry = layer_and_registry
    before = await wait_holdings(registry, spread_evenly(3), timeout=15)
    victim = cluster.workers[-1]
    victim_id = cluster.worker_id(victim)
    orphans = before[victim_id]
    client = Subscriber()
    await client.connect(cluster)
    for stream in streams(cluster):
        await client.request(stream, action="subscribe", stream=stream)
    member = GroupMember(layer)
    await member.join(streams(cluster))
    writer = Writer(layer, cluster.database, rate=60)
    await writer.start()
    await wait_for(lambda: len(member.messages) >= 60, 10, "changes flowing")
    loop = asyncio.get_running_loop()
    old_epochs = {m["epoch"] for m in member.messages}  # every table's, as it was
    killed_at = loop.time()
    await asyncio.to_thread(victim.kill)
    cluster.workers.remove(victim)
    save_output("workers-killed", victim)
    after = await wait_holdings(
        registry,
        lambda held: (
            victim_id not in held and all(any(s in v for v in held.values()) for s in orphans)
        ),
        timeout=LEASE + 10,
    )
    moved_after = loop.time() - killed_at
    # Changes of the orphaned tables flow again: in a new epoch, announced with resync.

    def resumed() -> bool:
        fresh = {
            f"{m['database']}.{m['table']}" for m in member.messages if m["epoch"] not in old_epochs
        }
        resyncs = {e["stream"] for e in client.of("resync")}
        return set(orphans) <= fresh and set(orphans) <= resyncs

    await wait_for(resumed, 10, "the orphaned tables to resume with a resync")
    resumed_after = loop.time() - killed_at
    await writer.stop(all_answered=False)
    member.leave()
    await client.close()
    cluster.figures["sigkill"] = {
        "tables_moved_after_s": round(moved_after, 2),
        "changes_flowing_again_after_s": round(resumed_after, 2),
        "orphaned_tables": len(orphans),
    }
    logger.warning("failover after SIGKILL: %s", cluster.figures["sigkill"])
    assert len(after) == 2 and sorted(len(s) for s in after.values()) == [3, 3], after
    assert moved_after <= LEASE + TICK + 1.0, moved_after
    resyncs = client.of("resync")
    assert {e["stream"] for e in resyncs} == set(orphans)  # only the tables that moved
    assert {e["reason"] for e in resyncs} == {"epoch_changed"}
    sent = ids_of(member.messages)
    assert [i for i, n in sent.items() if n > 1] == []  # a takeover never sends twice


async def test_a_worker_started_later_takes_its_share(cluster, layer_and_registry):
    _, registry = layer_and_registry
    await wait_holdings(registry, spread_evenly(2), timeout=15)
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    newcomer = await asyncio.to_thread(cluster.spawn_worker)
    await asyncio.to_thread(newcomer.wait_for, WORKER_READY, 60)
    newcomer_id = cluster.worker_id(newcomer)
    held = await wait_holdings(registry, spread_evenly(3), timeout=6 * LEASE)
    cluster.figures["newcomer_share_after_s"] = round(loop.time() - started_at, 2)
    assert len(held[newcomer_id]) == 2, held
    # A handover is clean: the old holder's feed is closed before the lease is released.
    assert "lease lost" not in "\n".join(w.output for w in cluster.workers)


async def test_status_shows_the_workers_their_tables_epochs_and_health(cluster, layer_and_registry):
    layer, registry = layer_and_registry
    held = await wait_holdings(registry, spread_evenly(3), timeout=15)
    member = GroupMember(layer)
    await member.join(streams(cluster))
    for table in TABLES:  # one change per table: known epochs and seqs
        reply = await layer.new_channel()
        await layer.send(
            "changeflow",
            {
                "type": "changeflow.push",
                "database": cluster.database,
                "table": table,
                "data": {"id": f"status-{table}"},
                "reply_channel": reply,
            },
        )
        assert (await asyncio.wait_for(layer.receive(reply), 10))["ok"]
    await wait_for(lambda: len(member.messages) >= len(TABLES), 10, "the changes")
    member.leave()
    last = {f"{m['database']}.{m['table']}": (m["epoch"], m["seq"]) for m in member.messages}
    await asyncio.sleep(TICK * 1.5)  # the workers publish their state once per renewal
    result = await asyncio.to_thread(cluster.status, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads(result.stdout)
    assert status["ok"] is True and status["problems"] == []
    assert status["rethinkdb"]["ok"] and status["redis"]["ok"]
    assert {w["id"]: sorted(w["tables"]) for w in status["workers"]} == held
    for worker in status["workers"]:
        for stream, table in worker["tables"].items():
            assert (table["epoch"], table["seq"]) == last[stream]
            assert table["pending"] == 0 and table["caught_up"] is True
            assert 0 < table["lease_ttl_ms"] <= LEASE * 1000
    assert status["tables"]["watched"] == len(TABLES) == status["tables"]["followed"]
    text = await asyncio.to_thread(cluster.status)
    assert text.returncode == 0, text.stdout + text.stderr
    for worker in status["workers"]:
        assert worker["id"] in text.stdout
    for stream in last:
        assert stream in text.stdout
    assert "Workers    3 alive" in text.stdout and text.stdout.rstrip().endswith("OK")
