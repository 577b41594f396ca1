"""One scenario of the fault matrix: a table, clients, a writer, one fault, the checks.

A scenario runs on the shared ``FaultStack`` with a table of its own (created with the
driver, followed by a worker before anyone subscribes). Three clients keep a view of
it: ``plain`` (reloads the table with the driver on ``resync``), ``snapshot`` and
``filtered`` (snapshot, ``g`` in [0, 1]). Load is ``quiet`` (a burst of accepted
pushes before the fault and one after it, nothing else) or ``busy`` (about 200
pushes a second from before the fault until well after it).

The invariants, checked once writes stop and every view had the chance to settle:
each view equals the (filtered) table; within an epoch ``seq`` grows by exactly one
and no change frame comes twice; every push answered ``ok`` is in the table; every
retried push is there once; the worker and Daphne still serve (a new subscriber
sees a new push). Figures per scenario go to ``test-output/faults/<server>/``
(``report.py`` turns them into docs/reliability.md's table).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels_redis.core import RedisChannelLayer

from ..bridge.recovery_helpers import Docs, Subscription, Tables, ViewClient, view_diff
from ..polling import send_when_room
from .clients import (
    FILTER,
    FaultWriter,
    FilteredViewClient,
    MatrixViewClient,
    filtered,
    frame_duplicates,
)
from .stack import REPO, SERVER_NAME, FaultStack, connect_kwargs

logger = logging.getLogger(__name__)
RESULTS = REPO / "test-output" / "faults" / SERVER_NAME
BUSY_BEFORE = 100  # pushes accepted before the fault (about 0.5 s at 200/s)
BUSY_AFTER = 200  # pushes accepted after it (about 1 s)
QUIET_BURST = 6
SETTLE_S = 45.0  # at most: views settle in 0.1-10 s, slower on a busy machine
SETTLE_CAP_S = 180.0  # while the table still changes


class Scenario:
    """See the module doc."""

    def __init__(self, stack: FaultStack, name: str, load: str) -> None:
        self.stack = stack
        self.name = name
        self.load = load
        self.table = "t_" + re.sub(r"[^A-Za-z0-9_]+", "_", f"{name}_{load}")[:50]
        self.database = stack.database
        self.stream = f"{self.database}.{self.table}"
        self.tables = Tables(connect_kwargs(stack.rethinkdb))
        self.layer = self.new_layer()
        self.writer = FaultWriter(self.layer, self.database, self.table, keys=uuid.uuid4().hex)
        self.clients: list[ViewClient] = []
        self.expected: dict[str, Callable[[Docs], Docs]] = {}
        self.fault_w = 0  # the last push sent before the fault
        self.fault_at = 0.0
        self.back_at = 0.0
        self.ignore_pushes_up_to = 0  # pushes whose data the fault itself destroyed
        self.prefill: list[dict[str, Any]] = []  # written with the driver before subscribing
        # Several workers: pushes not waiting for each other's answers may be written in
        # any order (README, "Several workers"); an update then overwritten by an earlier
        # one is counted as reordered, not lost.
        self.several_workers = False
        self.metrics: dict[str, Any] = {"scenario": name, "load": load, "server": SERVER_NAME}
        self.problems: list[str] = []

    def new_layer(self) -> RedisChannelLayer:
        return RedisChannelLayer(
            hosts=[{"address": self.stack.redis.url, "socket_timeout": None}],
            prefix=self.stack.prefix,
            capacity=1000,
        )

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- set-up --------------------------------------------------------------------------------

    async def create_table(self) -> None:
        """The table (and the database) exist and are ready: made here if missing."""
        db, table = self.database, self.table
        await self.tables._run(
            lambda r: r.branch(r.db_list().contains(db), {}, r.db_create(db)), 20
        )
        await self.tables._run(
            lambda r: r.branch(
                r.db(db).table_list().contains(table), {}, r.db(db).table_create(table)
            ),
            20,
        )
        await self.tables._run(lambda r: r.db(db).table(table).wait(), 20)

    async def reload(self, stream: str) -> Docs:
        return await self.tables.read(self.database, self.table)

    async def reload_filtered(self, stream: str) -> Docs:
        return filtered(await self.reload(stream))

    async def add_client(self, name: str, *, snapshot: bool, filter: bool = False) -> ViewClient:
        url, origin = self.stack.url(), self.stack.origin()
        client: ViewClient
        if filter:
            client = FilteredViewClient(
                url, origin, name, self.reload_filtered, extra={"filter": FILTER}
            )
        else:
            client = MatrixViewClient(url, origin, name, self.reload)
        self.expected[name] = filtered if filter else dict
        self.clients.append(client)
        await client.connect()
        await client.subscribe(self.stream, snapshot=snapshot)
        return client

    async def open(self) -> None:
        """The table exists and is followed; the three clients subscribed; answers read."""
        await self.create_table()
        if self.prefill:
            db, table, docs = self.database, self.table, self.prefill
            await self.tables._run(lambda r: r.db(db).table(table).insert(docs), 30)
        await asyncio.to_thread(self.stack.wait_followed, self.stream)
        plain = await self.add_client("plain", snapshot=False)
        if self.prefill:  # it starts from what is there, as an app would: a reload
            await plain._reload(self.sub(plain))
        await self.add_client("snapshot", snapshot=True)
        await self.add_client("filtered", snapshot=True, filter=True)
        await self.writer.start_answers()

    def sub(self, client: ViewClient) -> Subscription:
        return client.subscriptions[self.stream]

    # -- the run -------------------------------------------------------------------------------

    async def before(self) -> None:
        if self.load == "busy":
            await self.writer.start_steady()
            await self.writer.wait_accepted(self.writer.accepted + BUSY_BEFORE, 30)
        else:
            await self.writer.burst(QUIET_BURST)
            await self.settle(timeout=30)  # quiet: everything delivered before the fault

    async def inject(self, kind: str, fault: Callable[[], Awaitable[Any]]) -> None:
        self.metrics["fault"] = kind
        self.fault_w, self.fault_at, self.back_at = self.writer.n, self.now, 0.0
        await fault()
        self.back_at = self.back_at or self.now
        self.metrics["injection_s"] = round(self.back_at - self.fault_at, 2)

    def mark_back(self) -> None:
        """The fault ends now (a thaw: what comes next may arrive before it returns)."""
        self.back_at = self.now

    async def after(self) -> None:
        if self.load == "busy":
            try:  # pushes sent after the fault began, not late answers to earlier ones
                await self.writer.wait_accepted_after(self.fault_w, BUSY_AFTER, 30)
            except asyncio.TimeoutError:
                accepted = self.writer.accepted_after(self.fault_w)
                self.problems.append(
                    f"{accepted} pushes sent after the fault began accepted within 30 s "
                    f"(wanted {BUSY_AFTER}; {self.writer.stats()})"
                )
        else:
            accepted = await self.writer.burst(QUIET_BURST, timeout=30)
            if accepted < QUIET_BURST:
                self.problems.append(
                    f"quiet: {accepted}/{QUIET_BURST} pushes accepted after the fault"
                )

    async def settle(self, timeout: float = SETTLE_S, cap: float = SETTLE_CAP_S) -> Docs:
        """The table's state once every view equals it: waits ``timeout`` seconds for the
        views, longer while the table still changes (a worker still writing pushes queued
        during the fault, slow on a busy machine), never past ``cap``."""
        last_change = self.now
        give_up = self.now + cap
        table = await self.tables.read(self.database, self.table)
        while True:
            deadline = min(last_change + timeout, give_up)
            for client in self.clients:
                sub, expect = self.sub(client), self.expected[client.name](table)
                await client.wait_until(
                    lambda sub=sub, expect=expect: sub.view == expect, max(0.1, deadline - self.now)
                )
            again = await self.tables.read(self.database, self.table)
            if again == table or self.now > give_up:
                return again  # the views had their time on a table that stayed (or the cap)
            table, last_change = again, self.now  # writes still landing: wait for them

    async def finish(self) -> None:
        """Stop writing, settle, check every invariant, record the figures."""
        # Answers still due are read (a reply channel nobody reads fills up, and the
        # worker then spends seconds on each answer for it: see the report).
        await self.writer.stop(drain_timeout=30, quiet=5)
        table = await self.settle()
        self.check(table)
        await self.round_trip()
        dead = self.stack.alive()
        if dead:
            self.problems.append(f"died: {dead}")
        self.record(table)

    async def run(self, kind: str, fault: Callable[[], Awaitable[Any]]) -> None:
        await self.open()
        await self.before()
        await self.inject(kind, fault)
        await self.after()
        await self.finish()

    # -- the checks ----------------------------------------------------------------------------

    def check(self, table: Docs) -> None:
        pushes_lost: list[str] = []
        reordered: list[str] = []
        for problem in self.writer.missing_from(table):
            push = self.writer.pushes[int(problem.split("#")[1].split(":")[0])]
            if push.n <= self.ignore_pushes_up_to:
                continue  # written before the fault destroyed the data
            if push.op == "update" and (push.answer or {}).get("skipped"):
                continue  # answered: nothing to update (its document was destroyed)
            doc = table.get(push.key)
            if self.several_workers and push.op != "delete" and doc is not None:
                reordered.append(problem)  # written, then overwritten by an earlier push
                continue
            pushes_lost.append(problem)
        self.metrics["pushes_lost"] = len(pushes_lost)
        self.metrics["pushes_reordered"] = len(reordered)
        self.metrics["reordered_examples"] = reordered[:5]
        self.problems += [f"writer: {p}" for p in pushes_lost[:10]]
        retried = self.writer.retried_not_once(table)
        self.problems += [f"writer: {p}" for p in retried[:10]]
        lost = duplicates = resyncs = 0
        recovery: list[float | None] = []
        self.metrics["clients"] = {}
        for client in self.clients:
            sub, expect = self.sub(client), self.expected[client.name](table)
            diff = None if sub.view == expect else view_diff(sub.view, expect)
            dups = frame_duplicates(sub)
            after_fault = [reason for at, reason in sub.resyncs if at >= self.fault_at]
            lost += sub.lost_unannounced + (
                0 if diff is None else diff["missing"] + diff["extra"] + diff["different"]
            )
            duplicates += dups
            resyncs += len(after_fault)
            recovery.append(self.recovered_after(client))
            self.metrics["clients"][client.name] = {
                "view_equals_table": diff is None,
                "view_diff": diff,
                "lost_without_resync": sub.lost_unannounced,
                "duplicates": dups,
                "resyncs": after_fault,
                "snapshots": len(sub.snapshots),
                "reloads": len(sub.reloads),
                "changes": len(sub.changes),
                "violations": sub.violations[:10],
                "errors": client.errors[:5],
                "recovery_s": recovery[-1],
            }
            if diff is not None:
                self.problems.append(f"{client.name}: view != table {diff}; {sub.summary()}")
            if sub.violations:
                self.problems.append(f"{client.name}: {sub.violations[:5]}")
            if dups:
                self.problems.append(f"{client.name}: {dups} change frame(s) twice")
        self.metrics.update(
            changes_lost=lost,
            duplicates=duplicates,
            resyncs=resyncs,
            recovery_s=None if None in recovery or not recovery else max(recovery),  # type: ignore[type-var]
            table_size=len(table),
            writer=self.writer.stats(),
            retried=len(self.writer.retried),
        )

    def recovered_after(self, client: ViewClient) -> float | None:
        """Seconds from the fault's end until the client held data written after the
        fault began (a change, a fresh snapshot or a reload); None if it never did."""
        sub = self.sub(client)

        def newer(doc: Any) -> bool:
            return isinstance(doc, dict) and doc.get("w", -1) > self.fault_w

        times = [at for at, f in sub.changes if newer(f.get("new_val")) or newer(f.get("old_val"))]
        times += [at for at, f in sub.snapshots if any(newer(d) for d in f["documents"])]
        times += [at for at in sub.reloads if at >= self.back_at]
        times = [at for at in times if at >= self.back_at]
        return round(min(times) - self.back_at, 3) if times else None

    async def round_trip(self) -> None:
        """A new subscriber sees a new push: the worker and Daphne still serve."""
        probe = await self.add_client("probe", snapshot=True)
        # The push must be new to it: after its snapshot (which, past CHANGEFLOW_SNAPSHOT_LIMIT
        # documents, is truncated and might hold the probe's write beyond its cut).
        if not await probe.wait_until(lambda: bool(self.sub(probe).snapshots), 30):
            self.problems.append(f"round trip: no snapshot; {self.sub(probe).summary()}")
            return
        reply = await self.layer.new_channel()
        message = {
            "type": "changeflow.push",
            "database": self.database,
            "table": self.table,
            "data": {"id": "probe", "w": 10**9, "g": 0},
            "op": "upsert",
            "reply_channel": reply,
            "id": "probe",
        }
        answer: dict[str, Any] = {}
        deadline = self.now + 45
        while not answer.get("ok") and self.now < deadline:
            await send_when_room(self.layer, self.writer.channel, message)
            try:
                answer = await asyncio.wait_for(self.layer.receive(reply), 15)
            except asyncio.TimeoutError:
                answer = {"timeout": True}
        if not answer.get("ok"):
            self.problems.append(f"round trip: the probe push was answered {answer}")
            return

        async def sees(client: ViewClient) -> None:
            sub = self.sub(client)
            if not await client.wait_until(lambda: "probe" in sub.view, 30):
                self.problems.append(
                    f"round trip: {client.name} never saw the probe push; {sub.summary()}"
                )

        await asyncio.gather(*(sees(client) for client in self.clients))
        self.metrics["round_trip_ok"] = probe.name in {c.name for c in self.clients}

    def record(self, table: Docs) -> None:
        self.metrics["problems"] = self.problems[:20]
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}-{self.load}.json"
        path.write_text(json.dumps(self.metrics, indent=2, default=str))
        logger.info(
            "fault matrix %s/%s: %s",
            self.name,
            self.load,
            json.dumps(self.metrics, default=str)[:2000],
        )

    def assert_ok(self) -> None:
        assert not self.problems, (
            f"{self.name}/{self.load} on {SERVER_NAME}: see test-output/faults/ and "
            f"test-output/faults-{SERVER_NAME}-*.log\n" + "\n".join(self.problems[:20])
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if not self.writer._stopping:
            await self.writer.stop(drain_timeout=0)
        await self.layer.close_pools()
        # The table goes: the workers of the shared stack need not follow it any more.
        db, table = self.database, self.table
        try:
            await self.tables._run(
                lambda r: r.branch(
                    r.db_list().contains(db),
                    r.branch(r.db(db).table_list().contains(table), r.db(db).table_drop(table), {}),
                    {},
                ),
                10,
            )
        except Exception:  # a scenario's end: logged, the next one has its own table
            logger.exception("could not drop %s", self.stream)
