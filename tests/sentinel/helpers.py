"""Helpers for the Sentinel failover test: pushes through Daphne with the Python client
(idempotency keys, tried again as an application would), and who held which lease when,
read from the workers' timestamped logs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from changeflow_channels.client import ChangeflowClient, ChangeflowError
from changeflow_channels.client.connection import RETRYABLE


@dataclass
class PushRecord:
    n: int
    stream: str
    first_sent: float
    accepted_at: float | None = None
    attempts: int = 0
    refused: str | None = None


@dataclass
class Pushers:
    """``tasks`` tasks pushing ``{"n": n}`` documents (no primary key: RethinkDB makes
    one, so a push written twice is two documents) into ``streams`` in turn, one push
    after the other each, every push with an idempotency key of its own, tried again
    with the same key until it is accepted (the Python client's retries, then ours).
    Each task has a connection of its own, paced below ``CHANGEFLOW_PUSH_RATE`` (20/s)."""

    url: str
    streams: list[str]
    tasks: int = 4
    pause: float = 0.06
    records: dict[int, PushRecord] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    _count: Any = field(default_factory=lambda: itertools.count(1))
    _stopping: bool = False
    _clients: list[ChangeflowClient] = field(default_factory=list)
    _running: list[asyncio.Task[None]] = field(default_factory=list)
    _accepted: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def accepted(self) -> int:
        return sum(1 for r in self.records.values() if r.accepted_at is not None)

    async def start(self) -> None:
        for _ in range(self.tasks):
            client = ChangeflowClient(self.url, timeout=3.0, retries=1, min_delay=0.2)
            await client.connect()
            self._clients.append(client)
        self._running = [asyncio.ensure_future(self._push_forever(c)) for c in self._clients]

    async def _push_forever(self, client: ChangeflowClient) -> None:
        while not self._stopping:
            n = next(self._count)
            record = self.records[n] = PushRecord(n, self.streams[n % len(self.streams)], self.now)
            while True:
                record.attempts += 1
                try:
                    await client.push(record.stream, {"n": n}, idempotency_key=f"k{n}")
                except ChangeflowError as error:
                    self.errors[error.code] += 1
                    if error.code in RETRYABLE:
                        await asyncio.sleep(0.2)  # the application's own backoff
                        continue
                    record.refused = error.code
                    break
                record.accepted_at = self.now
                async with self._accepted:
                    self._accepted.notify_all()
                break
            await asyncio.sleep(self.pause)  # the pushers' pace

    async def wait(self, predicate: Any, timeout: float) -> None:
        async with self._accepted:
            await asyncio.wait_for(self._accepted.wait_for(predicate), timeout)

    async def stop(self, timeout: float = 30.0) -> None:
        """No new pushes; the ones under way are tried until accepted (``timeout``)."""
        self._stopping = True
        try:
            await asyncio.wait_for(asyncio.gather(*self._running), timeout)
        finally:
            for task in self._running:
                task.cancel()
            for client in self._clients:
                await client.close()

    def first_accepted_after(self, at: float) -> float | None:
        """Seconds from ``at`` to the first answer ``ok`` to a push first sent after ``at``."""
        times = [
            r.accepted_at for r in self.records.values() if r.first_sent >= at and r.accepted_at
        ]
        return min(times) - at if times else None


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
# The INFO line of a lease taken and counted on, nothing else (a lease given back for
# want of a replica's acknowledgement was never held).
TAKEN = re.compile(r" (\S+): lease taken \(\d+ worker\(s\) alive\)")
ENDED = re.compile(r" (\S+): lease (?:lost|not renewed|released)| released the leases")


@dataclass
class Holding:
    worker: int
    stream: str
    start: datetime
    end: datetime | None  # None: still held when the log ends


def holdings(worker: int, output: str) -> list[Holding]:
    """When worker ``worker`` held which lease, by its log (format with ``asctime``)."""
    held: dict[str, Holding] = {}
    done: list[Holding] = []
    for line in output.splitlines():
        stamp = LOG_TIME.match(line)
        if stamp is None:
            continue
        at = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f")
        taken = TAKEN.search(line)
        if taken:
            held[taken[1]] = Holding(worker, taken[1], at, None)
            continue
        ended = ENDED.search(line)
        if ended is None:
            continue
        streams = [ended[1]] if ended[1] else list(held)  # "released the leases": all of them
        for name in streams:
            with contextlib.suppress(KeyError):
                holding = held.pop(name)
                holding.end = at
                done.append(holding)
    return done + list(held.values())


def overlaps(every: list[Holding]) -> list[str]:
    """Two workers holding one table's lease at the same time, by their logs."""
    found = []
    for a, b in itertools.combinations(every, 2):
        if a.stream != b.stream or a.worker == b.worker:
            continue
        a_end, b_end = a.end or datetime.max, b.end or datetime.max
        if a.start < b_end and b.start < a_end:
            found.append(
                f"{a.stream}: worker {a.worker} {a.start}-{a.end}, {b.worker} {b.start}-{b.end}"
            )
    return found
