"""Fault tests (issue 5): under a steady stream of writes, every client's view ends equal
to the table, no accepted push is lost, and no change is skipped without a ``resync``.

Each test runs its own worker and Daphne (a channel-layer namespace of their own,
watching only the test's database), real websocket clients keeping a view of the
table (``ViewClient``: snapshot, changes, resync -> fresh snapshot or a reload with
the driver) and a ``SteadyWriter`` pushing through the channel layer. A test that
restarts RethinkDB or Redis gets its own. Per fault, the measured recovery time
(from the fault to the first data written after it reaching the client) and the
changes lost without a resync are written to ``test-output/recovery/<test>.json``
(and logged); worker and Daphne output go to ``test-output/<test>-*.log``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.testing.processes import RedisServer

from .conftest import REPO
from .helpers import receive
from .recovery_helpers import (
    Docs,
    Stack,
    SteadyWriter,
    Subscription,
    Tables,
    ViewClient,
    view_diff,
)

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)
METRICS = REPO / "test-output" / "recovery"
TABLE = "items"


@dataclass
class Fault:
    kind: str
    at: float  # loop time the fault began (for a reconnect: the client came back)
    w: float  # the last push sent before it: data written after it has w > this
    accepted: int  # pushes accepted before it
    back_at: float = 0.0  # loop time the injection was over (the component back up)


class Harness:
    """A test's stack (worker + Daphne), writer, clients and measurements."""

    def __init__(
        self, name: str, env: dict[str, str], database: str, connect_kwargs: dict, redis_url: str
    ) -> None:
        self.name = name
        self.database = database
        self.stream = f"{database}.{TABLE}"
        self.stack = Stack(env, name)
        self.tables = Tables(connect_kwargs)
        self.layer = RedisChannelLayer(
            hosts=[{"address": redis_url, "socket_timeout": None}],
            prefix=env["CHANGEFLOW_TEST_REDIS_PREFIX"],
            capacity=1000,
        )
        self.writer = SteadyWriter(self.layer, database, TABLE)
        self.clients: list[ViewClient] = []
        self.faults: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] = {"test": name}

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def start(self) -> None:
        """The table exists (empty) before the worker starts: its feed opens at seq 0."""
        await self.tables.create(self.database, TABLE)
        await asyncio.to_thread(self.stack.start)

    async def reload(self, stream: str) -> Docs:
        return await self.tables.read(self.database, TABLE)

    async def client(self, name: str, *, snapshot: bool) -> ViewClient:
        client = ViewClient(self.stack.url, self.stack.origin, name, self.reload)
        self.clients.append(client)
        await client.connect()
        await client.subscribe(self.stream, snapshot=snapshot)
        return client

    def sub(self, client: ViewClient) -> Subscription:
        return client.subscriptions[self.stream]

    async def flowing(self, count: int = 40) -> None:
        """Until ``count`` more pushes were accepted and every client has seen changes."""
        await self.writer.wait_accepted(self.writer.accepted + count)
        for client in self.clients:
            sub = self.sub(client)
            seen = await client.wait_until(lambda sub=sub: bool(sub.changes), 10)
            assert seen, f"{client.name} saw no change before the fault: {sub.summary()}"

    def fault(self, kind: str) -> Fault:
        now = self.now
        return Fault(kind, now, self.writer.n, self.writer.accepted, back_at=now)

    async def recovered(self, fault: Fault, after: int = 40, timeout: float = 25.0) -> None:
        """Until ``after`` pushes more were accepted and every client got data written
        after the fault; records the recovery time (None if it never came)."""
        deadline = self.now + timeout
        entry: dict[str, Any] = {
            "fault": fault.kind,
            "injection_s": round(fault.back_at - fault.at, 3),
            "clients": {},
        }
        try:
            await self.writer.wait_accepted(fault.accepted + after, timeout)
            entry["writes_accepted_again_after_s"] = round(self.now - fault.at, 3)
        except asyncio.TimeoutError:
            entry["writes_accepted_again_after_s"] = None
        for client in self.clients:
            sub = self.sub(client)
            await client.wait_until(
                lambda sub=sub: first_data_after(sub, fault) is not None,
                max(0.1, deadline - self.now),
            )
            delay = first_data_after(sub, fault)
            entry["clients"][client.name] = {
                "recovery_s": None if delay is None else round(delay, 3),
                "first_resync_after_s": next(
                    (round(t - fault.at, 3) for t, _ in sub.resyncs if t >= fault.at), None
                ),
            }
        self.faults.append(entry)

    async def finish(self, settle_timeout: float = 15.0) -> Docs:
        """Stop writing; the table's final state, once every view had the chance to reach it."""
        await self.writer.stop()
        table = await self.tables.read(self.database, TABLE)
        deadline = self.now + settle_timeout
        while True:
            for client in self.clients:
                sub = self.sub(client)
                await client.wait_until(
                    lambda sub=sub, table=table: sub.view == table, max(0.1, deadline - self.now)
                )
            again = await self.tables.read(self.database, TABLE)
            if again == table or self.now > deadline:
                table = again
                break
            table = again  # a late push landed meanwhile: wait for that state
        self._record(table)
        return table

    def _record(self, table: Docs) -> None:
        self.metrics["faults"] = self.faults
        self.metrics["writer"] = self.writer.stats()
        self.metrics["table_size"] = len(table)
        self.metrics["clients"] = {}
        for client in self.clients:
            sub = self.sub(client)
            self.metrics["clients"][client.name] = {
                "view_equals_table": sub.view == table,
                "view_diff": None if sub.view == table else view_diff(sub.view, table),
                "lost_without_resync": sub.lost_unannounced,
                "resyncs": [reason for _, reason in sub.resyncs],
                "snapshots": len(sub.snapshots),
                "reloads": len(sub.reloads),
                "changes": len(sub.changes),
                "changes_before_snapshot": sub.changes_before_snapshot,
                "violations": sub.violations[:10],
                "unexpected_closes": len(client.unexpected_closes),
                "errors": client.errors[:5],
            }
        METRICS.mkdir(parents=True, exist_ok=True)
        (METRICS / f"{self.name}.json").write_text(json.dumps(self.metrics, indent=2, default=str))
        logger.info("recovery metrics %s: %s", self.name, json.dumps(self.metrics, default=str))

    def check(self, table: Docs) -> None:
        """The bar: no accepted push missing, every view equal to the table, no change
        skipped or repeated without a resync, no change before a requested snapshot."""
        problems = [f"writer: {p}" for p in self.writer.missing_from(table)[:10]]
        for client in self.clients:
            sub = self.sub(client)
            if sub.view != table:
                problems.append(
                    f"{client.name}: view != table {view_diff(sub.view, table)}; {sub.summary()}"
                )
            if sub.violations:
                problems.append(f"{client.name}: {sub.violations[:5]}; {sub.summary()}")
            if sub.changes_before_snapshot:
                problems.append(
                    f"{client.name}: {sub.changes_before_snapshot} change(s) before the snapshot"
                )
        assert not problems, (
            f"see test-output/{self.name}-*.log and test-output/recovery/{self.name}.json\n"
            + "\n".join(problems)
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if not self.writer._stopping:
            await self.writer.stop(drain_timeout=0)
        await self.layer.close_pools()
        await asyncio.to_thread(self.stack.stop)


def first_data_after(sub: Subscription, fault: Fault) -> float | None:
    """The recovery time: seconds from the fault's start to the first frame that
    arrived once the injection was over and brings data written after the fault
    began (a write may still slip through while, say, Redis shuts down)."""
    arrivals = [
        at
        for at, frame in sub.changes
        if at >= fault.back_at and (frame.get("new_val") or {}).get("w", -1) > fault.w
    ]
    arrivals += [
        at
        for at, frame in sub.snapshots
        if at >= fault.back_at and any(d.get("w", -1) > fault.w for d in frame["documents"])
    ]
    return min(arrivals) - fault.at if arrivals else None


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer.running() as server:
        yield server


@pytest.fixture
async def harness(
    request, process_env, redis_url, rethinkdb_target, stream_db
) -> AsyncIterator[Any]:
    """``harness(reql=server, redis=url, **env)``: a Harness of the test's own."""
    made: list[Harness] = []
    name = "recovery-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)

    def make(*, reql: Any = None, redis: str | None = None, **extra_env: str) -> Harness:
        env = {
            **process_env,
            "CHANGEFLOW_TEST_REDIS_PREFIX": "rc" + uuid.uuid4().hex[:8],
            "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
            "CHANGEFLOW_TEST_HANDLERS": "",
            "CHANGEFLOW_TEST_DEBUG_LOGS": "1",
            **extra_env,
        }
        connect_kwargs = rethinkdb_target.connect_kwargs()
        if reql is not None:
            env["CHANGEFLOW_TEST_RETHINKDB_URL"] = reql.url
            connect_kwargs = parse_rethinkdb_url(reql.url).connect_kwargs()
        if redis is not None:
            env["CHANGEFLOW_TEST_REDIS_URL"] = redis
        h = Harness(name, env, stream_db, connect_kwargs, redis or redis_url)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.close()


async def run_fault(h: Harness, kind: str, inject) -> Docs:
    """Two clients (one with snapshots, one reloading on resync), steady writes, the
    fault, recovery, the end state."""
    await h.start()
    await h.client("snapshot", snapshot=True)
    await h.client("plain", snapshot=False)
    await h.writer.start()
    await h.flowing()
    fault = h.fault(kind)
    await inject()
    fault.back_at = h.now
    await h.recovered(fault)
    table = await h.finish()
    h.check(table)
    return table


async def test_rethinkdb_restart_mid_stream(faulty_rethinkdb, harness):
    h = harness(reql=faulty_rethinkdb)
    await run_fault(
        h,
        "RethinkDB restarted (down 1 s)",
        lambda: asyncio.to_thread(faulty_rethinkdb.restart, keep_data=True, down_for=1.0),
    )


async def test_redis_restart_mid_stream(own_redis, harness):
    h = harness(redis=own_redis.url)
    await run_fault(h, "Redis restarted", lambda: asyncio.to_thread(own_redis.restart))
    # The layer coming back is no push: the worker refuses nothing for it.
    assert "unknown message type" not in h.stack.worker.output


async def test_rethinkdb_half_open_mid_stream(faulty_rethinkdb, harness):
    """RethinkDB stops answering but keeps the connections open, until the worker
    notices on the table's feed (its keepalive ping times out); then it answers again."""
    h = harness(reql=faulty_rethinkdb)
    # Each feed on its own connection (CHANGEFLOW_FEED_CONNECTIONS None, the default): the
    # table's feed is pinged (with a pool, "feed connection N: ..." would be).
    noticed = re.escape(h.stream) + r": RethinkDB did not answer a ping"

    async def freeze_until_noticed() -> None:
        await asyncio.to_thread(faulty_rethinkdb.freeze)
        try:
            await asyncio.to_thread(h.stack.worker.wait_for, noticed, 20)
        finally:
            await asyncio.to_thread(faulty_rethinkdb.thaw)

    await run_fault(h, "RethinkDB half-open until the worker noticed", freeze_until_noticed)


async def test_worker_sigkill_and_restart(harness):
    h = harness()

    async def kill_and_restart() -> None:
        await asyncio.to_thread(h.stack.kill_worker)
        await asyncio.to_thread(h.stack.start_worker)

    await run_fault(h, "worker SIGKILL + restart", kill_and_restart)


async def test_client_reconnects_and_resumes_with_since(harness):
    h = harness()
    await h.start()
    await h.client("steady", snapshot=False)  # stays connected throughout
    resuming = [
        await h.client("since", snapshot=False),
        await h.client("since+snapshot", snapshot=True),
    ]
    await h.writer.start()
    await h.flowing()
    w_left = h.writer.n
    for client in resuming:
        await client.disconnect()
    away_from = h.now
    await h.writer.wait_accepted(h.writer.accepted + 40)  # ~1 s of writes missed
    fault = Fault("client reconnect with since", h.now, w_left, h.writer.accepted)
    w_back = h.writer.n
    h.metrics["away_s"] = round(fault.at - away_from, 3)
    for client in resuming:
        assert h.sub(client).since() is not None  # it resumes from a position it saw
        await client.resume()
    fault.back_at = h.now
    await h.recovered(fault)
    table = await h.finish()
    h.check(table)
    for client in resuming:
        sub = h.sub(client)
        # The history reaches back that far: resuming must not need a resync.
        assert not sub.resyncs and len(sub.snapshots) <= 1, sub.summary()
        # What it missed while away was replayed (before the live changes).
        replayed = [f for t, f in sub.changes if t >= fault.at and f["new_val"] is not None]
        assert replayed and replayed[0]["new_val"]["w"] <= w_back, sub.summary()
        h.metrics["clients"][client.name]["replayed"] = sum(
            1 for f in replayed if f["new_val"]["w"] <= w_back
        )
    h._record(table)


async def test_snapshot_plus_changes_equals_the_table_under_concurrent_writes(harness):
    h = harness()
    await h.start()
    reference = await h.client("reference", snapshot=True)  # empty table, before any write
    await h.writer.start()
    late = []
    for i in range(4):
        await h.writer.wait_accepted(h.writer.accepted + 15)
        late.append(await h.client(f"late{i}", snapshot=True))
    await h.writer.wait_accepted(h.writer.accepted + 20)
    table = await h.finish()
    h.check(table)

    ref = h.sub(reference)
    assert not ref.resyncs and len(ref.snapshots) == 1, ref.summary()
    [(_, first)] = ref.snapshots
    assert first["documents"] == [] and first["seq"] == 0, first
    ref_frames = [frame for _, frame in ref.changes]
    assert [f["seq"] for f in ref_frames] == list(range(1, len(ref_frames) + 1))
    assert {f["epoch"] for f in ref_frames} == {first["epoch"]}
    snapshot_seqs = []
    for client in late:
        sub = h.sub(client)
        assert not sub.resyncs and len(sub.snapshots) == 1, sub.summary()
        [(taken, snapshot)] = sub.snapshots
        k = snapshot["seq"]
        snapshot_seqs.append(k)
        assert snapshot["epoch"] == first["epoch"], snapshot
        # The snapshot is the table exactly after change k...
        expected = replay(ref_frames[:k])
        got = {doc["id"]: doc for doc in snapshot["documents"]}
        assert got == expected, (client.name, k, view_diff(got, expected))
        # ...and exactly the changes after k follow it.
        after = [essence(f) for t, f in sub.changes if t >= taken]
        assert after == [essence(f) for f in ref_frames[k:]], client.name
    h.metrics["snapshot_seqs"] = snapshot_seqs
    h._record(table)
    assert all(k > 0 for k in snapshot_seqs), snapshot_seqs  # taken under writes


def replay(frames: list[dict[str, Any]]) -> Docs:
    state: Docs = {}
    for frame in frames:
        if frame["type"] == "remove":
            state.pop(frame["old_val"]["id"], None)
        else:
            state[frame["new_val"]["id"]] = frame["new_val"]
    return state


def essence(frame: dict[str, Any]) -> tuple:
    return (frame["epoch"], frame["seq"], frame["type"], frame["old_val"], frame["new_val"])


@pytest.mark.parametrize("history", ["1000", "20"])
async def test_overflowing_client_channel_is_healed_or_resynced(harness, history):
    """Capacity 5: the worker's group_send drops changes for the consumer's channel.
    With the default history the gaps can be filled; with 20 they cannot: resync."""
    # One message per change (no batching), so that the burst overflows the channel.
    h = harness(
        CHANGEFLOW_TEST_CAPACITY="5",
        CHANGEFLOW_TEST_HISTORY=history,
        CHANGEFLOW_TEST_BATCH_SIZE="1",
    )
    h.writer.rate = 20
    await h.start()
    clients = [await h.client("snapshot", snapshot=True), await h.client("plain", snapshot=False)]
    await h.writer.start()
    await h.flowing(20)
    fault = h.fault("channel overflow: 300 documents in one push")
    batch = [{"id": f"b{i}", "w": fault.w + 0.5} for i in range(300)]
    reply = await h.layer.new_channel()
    await h.layer.send(
        "changeflow",
        {
            "type": "changeflow.push",
            "database": h.database,
            "table": TABLE,
            "data": batch,
            "reply_channel": reply,
        },
    )
    answer = await receive(h.layer, reply, timeout=20)
    assert answer["ok"] and answer["inserted"] == 300, answer
    keys = [doc["id"] for doc in batch]

    async def complete(client: ViewClient) -> None:
        """How long until the client's view holds the whole batch (healed or resynced)."""
        sub = h.sub(client)
        done = await client.wait_until(lambda: all(k in sub.view for k in keys), 15)
        h.metrics.setdefault("batch_complete_s", {})[client.name] = (
            round(h.now - fault.at, 3) if done else None
        )

    await h.recovered(fault, after=20)
    await asyncio.gather(*(complete(client) for client in clients))
    table = await h.finish()
    dropped = sum(line.count("over capacity") for w in h.stack.workers for line in w.lines)
    h.metrics["group_sends_over_capacity"] = dropped
    for client in clients:
        sub = h.sub(client)
        h.metrics["clients"][client.name]["healed_without_resync"] = not sub.resyncs
    h._record(table)
    h.check(table)
    assert all(f"b{i}" in table for i in range(300))
    # The fault did happen: the channel layer dropped messages for the clients' channel.
    assert dropped > 0, "no group_send went over capacity: the test proved nothing"
