"""Who follows which table when several workers run: one reader per table.

Every ``tick`` (a fifth of the lease time) each worker, in one round:

1. heartbeats (and learns how many workers are alive),
2. renews the leases it holds (a lease found taken or expired: that feed stops),
3. computes its share, ``ceil(tables / live workers)``;
4. above its share (a worker joined), releases half its surplus, the tables it
   likes least: each is stopped, its last changes sent, then its lease deleted;
5. below its share, takes vacant tables, the ones it likes best first
   (rendezvous hashing: workers prefer different tables, so they rarely race).
   A table vacant for ``OVERFLOW_ROUNDS`` rounds in a row is taken even beyond
   the share (workers that disagree on the tables must never leave one behind).

Fencing: a lease renewed at ``t`` (the time the renewal was *sent*) lives in
Redis until at least ``t + lease_time``. Its holder stops sending that table's
changes at ``t + 2/3 lease_time`` unless a later renewal succeeded, and stops the
feed then: in a partition from Redis, the old holder is silent before anyone
else can take the table. With ``CHANGEFLOW_LEASE_REPLICAS`` a renewal counts once
the replicas acknowledged it (``leases.py``): a failover keeps what counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import time
from typing import Any, Protocol

from .. import metrics
from ..redis_layer import REDIS_ERRORS
from .leases import LeaseStore

logger = logging.getLogger(__name__)

TICKS_PER_LEASE = 5
FENCE_FRACTION = 2 / 3
OVERFLOW_ROUNDS = 3
# A table this worker released is not taken back beyond its share for this many rounds.
COOLDOWN_ROUNDS = 10


class FeedControl(Protocol):
    """What the sharing needs from the feeds (``table_feeds.TableFeeds``)."""

    def start_feed(self, stream: str, announce_initial: bool) -> None: ...

    async def stop_feed(self, stream: str) -> None:
        """Stop following; return once its changes read so far were sent."""

    def drop_feed(self, stream: str) -> None:
        """Stop following at once (the lease is lost: unsent changes are dropped)."""

    def is_following(self, stream: str) -> bool:
        """Whether a feed of ``stream`` runs."""

    def published_state(self) -> dict[str, Any]: ...


def rank(worker_id: str, stream: str) -> bytes:
    """This worker's preference for a table (lower: preferred)."""
    return hashlib.blake2b(f"{worker_id}/{stream}".encode(), digest_size=8).digest()


def share_of(tables: int, workers: int) -> int:
    return math.ceil(tables / max(1, workers))


class Fence:
    """Until when (loop time) this worker may send each table's changes: the
    tables whose lease it holds, each until two thirds of the lease time after
    its last renewal was sent. ``TableSharing`` keeps it; ``Delivery`` asks it.
    Not ``enforced`` (one worker, no leases): every change may be sent."""

    def __init__(self, enforced: bool = True) -> None:
        self.enforced = enforced
        self.until: dict[str, float] = {}

    def may_send(self, stream: str) -> bool:
        """Whether this worker may still send ``stream``'s changes (its lease is safe)."""
        if not self.enforced:
            return True
        deadline = self.until.get(stream)
        return deadline is not None and asyncio.get_running_loop().time() < deadline


class TableSharing:
    """Takes, keeps and gives up this worker's tables (see the module doc)."""

    def __init__(
        self,
        store: LeaseStore,
        lease_time: float,
        control: FeedControl,
        info: dict[str, Any],
        fence: Fence | None = None,
    ) -> None:
        self.store = store
        self.worker_id = store.worker_id
        self.lease_time = lease_time
        self.tick = lease_time / TICKS_PER_LEASE
        self.fence_after = lease_time * FENCE_FRACTION
        self.control = control
        self.info = info
        self.candidates: dict[str, float | None] = {}  # stream -> loop time it appeared
        self.fence = fence if fence is not None else Fence()
        self.held = self.fence.until  # stream -> loop time its changes may be sent until
        self.live: list[str] = []
        self.holders_seen: dict[str, str | None] = {}  # at the last look, for tables not ours
        self.ready = asyncio.Event()
        self._acquiring = True
        self._wake = asyncio.Event()
        self._vacant_rounds: dict[str, int] = {}
        self._released_round: dict[str, int] = {}
        self._round = 0
        self._last_live = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        # A claim and a round must not interleave: each reads and changes ``held``
        # around its Redis calls (a claim seen as "lost" or "stale" by a round).
        self._lock = asyncio.Lock()
        self._releasing: set[str] = set()  # dropped tables whose lease is still ours
        self._stopped = False
        self._claims: set[asyncio.Task[None]] = set()

    # -- from the flow ------------------------------------------------------------

    def add(self, stream: str, appeared: bool) -> None:
        """A watched table exists (``appeared``: it was created while we watched).

        A new table is claimed at once when within our share (one Redis call: its
        first writes must find its feed open as soon as possible); otherwise, and
        if that fails, the next round deals with it."""
        if stream in self.candidates:
            return
        self.candidates[stream] = self._now() if appeared else None
        if appeared and self.ready.is_set() and self._acquiring:
            if len(self.held) < share_of(len(self.candidates), len(self.live)):
                task = asyncio.ensure_future(self._claim(stream))
                self._claims.add(task)
                task.add_done_callback(self._claims.discard)
                return
        self._wake.set()

    async def _claim(self, stream: str) -> None:
        async with self._lock:
            if stream in self.held or stream in self._releasing:
                self._wake.set()  # the round sorts it out (re-created while still ours)
                return
            sent = self._now()
            try:
                taken = await self.store.acquire(stream)
                if taken and not (stream in self.candidates and self._acquiring):
                    await self.store.release([stream])
                    taken = False
            except REDIS_ERRORS as error:
                logger.warning("%s: could not claim its lease (%r)", stream, error)
                taken = False
            if taken:
                self._taken(stream, sent)
            else:
                self._wake.set()

    def remove(self, stream: str) -> None:
        """The table was dropped: it is no longer followed (the flow stopped its
        feed) and its lease is released at the next round, before anything is taken,
        so a table re-created at once is claimed afresh."""
        self.candidates.pop(stream, None)
        if self.held.pop(stream, None) is not None:
            self._releasing.add(stream)
            metrics.LEASES_HELD.set(len(self.held))
        self._wake.set()

    def watches(self, stream: str) -> bool:
        """Whether ``stream`` is a watched table (added and not removed)."""
        return stream in self.candidates

    def holds(self, stream: str) -> bool:
        return stream in self.held

    def held_elsewhere(self, stream: str) -> bool:
        """Another worker held ``stream`` at the last look."""
        holder = self.holders_seen.get(stream)
        return stream not in self.held and holder not in (None, self.worker_id)

    def may_send(self, stream: str) -> bool:
        """Whether this worker may still send ``stream``'s changes (its lease is safe)."""
        return self.fence.may_send(stream)

    async def holder(self, stream: str) -> str | None:
        return (await self.store.holders([stream]))[stream]

    async def announced_elsewhere(self, stream: str) -> bool:
        """Another worker holds ``stream`` and published its feed as caught up (False
        when Redis cannot tell)."""
        try:
            holder = await self.holder(stream)
            if holder is None or holder == self.worker_id:
                return False
            published = await self.store.published(holder)
        except REDIS_ERRORS as error:
            logger.debug("%s: its holder's state not read (%r)", stream, error)
            return False
        tables = (published or {}).get("tables") or {}
        return bool((tables.get(stream) or {}).get("caught_up"))

    def publish_soon(self) -> None:
        """Publish this worker's state (its feeds caught up) now, not at the next tick."""
        self._wake.set()

    def start(self, discovered: asyncio.Event) -> None:
        self._task = asyncio.ensure_future(self.run(discovered))

    def stop_acquiring(self) -> None:
        """Take no more tables (shutting down); the leases held are still renewed
        until ``stop``, once their feeds are closed."""
        self._acquiring = False

    async def stop(self) -> None:
        """Clean shutdown, once the feeds are closed: release everything, leave."""
        self._acquiring = False
        self._stopped = True
        if self._task is not None:
            # Python 3.11's wait_for can swallow a cancel that lands as its inner
            # call completes: cancel until the task is really done (the loop also
            # checks _stopped), never await it unbounded.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=self.tick)
            if not self._task.cancelled() and (error := self._task.exception()) is not None:
                logger.error("leases: the rounds ended with %r", error)
        held = list(self.held)
        self.held.clear()
        metrics.LEASES_HELD.set(0)
        try:
            await self.store.release(held)
            await self.store.unregister()
            if held:
                logger.info("released the leases of %d table(s)", len(held))
        except REDIS_ERRORS as error:
            logger.warning("could not release leases at shutdown (%r): they expire", error)
        with contextlib.suppress(*REDIS_ERRORS):
            await self.store.close()

    # -- the rounds ---------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def run(self, discovered: asyncio.Event) -> None:
        fence = asyncio.ensure_future(self._fence_forever())
        try:
            while not self._stopped:
                self._wake.clear()
                try:
                    known = discovered.is_set()  # as the round saw it, not as it ends
                    async with self._lock:
                        await self.round(known)
                    if known:
                        self.ready.set()
                    if self._failing:
                        logger.warning("leases: Redis answers again")
                    self._failing = False
                except asyncio.CancelledError:
                    raise
                except REDIS_ERRORS as error:
                    if not self._failing:
                        logger.warning("leases: Redis unavailable (%r); retrying", error)
                    self._failing = True
                except Exception:  # a round's boundary: the next round tries again
                    logger.exception("leases: a round failed; retrying")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.tick)
        finally:
            fence.cancel()

    async def round(self, discovered: bool) -> None:
        """One round (see the module doc)."""
        self._round += 1
        sent = self._now()
        self.info["tables"] = self.control.published_state()
        self.info["at"] = time.time()
        self.live = await self.store.heartbeat(self.info)
        if self._releasing:
            releasing = list(self._releasing)
            await self.store.release(releasing)
            self._releasing.difference_update(releasing)
        if self.held:
            asked = list(self.held)
            renewal = await self.store.renew(asked)
            for stream in asked:
                if stream not in self.held:
                    continue  # dropped meanwhile (remove): released at the next round
                if stream in renewal.renewed:
                    # Not acknowledged by the replicas: a failover may undo it, so the
                    # fence stays where the last acknowledged renewal put it.
                    if renewal.acknowledged:
                        self.held[stream] = sent + self.fence_after
                else:
                    logger.warning("%s: lease lost (expired or taken); stopped following", stream)
                    self._drop(stream)
        gone = [stream for stream in self.held if stream not in self.candidates]
        for stream in gone:
            del self.held[stream]
            self.control.drop_feed(stream)
        if gone:
            await self.store.release(gone)
        for stream in self.held:
            if not self.control.is_following(stream):  # its feed ended (a crash, say)
                logger.warning("%s: lease held but not followed; following it again", stream)
                self.control.start_feed(stream, False)
        if not discovered or not self._acquiring:
            return
        workers = len(self.live)
        stable, self._last_live = workers == self._last_live, workers
        share = share_of(len(self.candidates), workers)
        surplus = len(self.held) - share
        if surplus > 0:
            if stable:
                await self._release_surplus(math.ceil(surplus / 2))
                metrics.LEASES_HELD.set(len(self.held))
            return
        await self._take(share)
        metrics.LEASES_HELD.set(len(self.held))

    async def _take(self, share: int) -> None:
        wanted = [stream for stream in self.candidates if stream not in self.held]
        holders = await self.store.holders(wanted)
        self.holders_seen = dict(holders)
        stale = [stream for stream, holder in holders.items() if holder == self.worker_id]
        if stale:  # ours in Redis, but fenced here: give it back, like any vacant table
            await self.store.release(stale)
        vacant = sorted(
            (stream for stream, holder in holders.items() if holder is None),
            key=lambda stream: rank(self.worker_id, stream),
        )
        self._vacant_rounds = {s: self._vacant_rounds.get(s, 0) + 1 for s in vacant}
        started = self._now()
        for stream in vacant:
            if len(self.held) >= share and not self._overflow(stream):
                continue
            if self._now() - started >= self.tick / 2:
                # As many as fit in half a tick: those taken must be renewed (next
                # round, at once) before their fence; the rest waits for it.
                self._wake.set()
                break
            sent = self._now()
            if stream not in self.held and await self.store.acquire(stream):
                self._taken(stream, sent)

    def _taken(self, stream: str, sent: float) -> None:
        """The lease is ours (asked at loop time ``sent``): follow the table."""
        self.held[stream] = sent + self.fence_after
        self._vacant_rounds.pop(stream, None)
        appeared = self.candidates.get(stream)
        announce = appeared is not None and sent - appeared < self.lease_time
        logger.info("%s: lease taken (%d worker(s) alive)", stream, len(self.live))
        self.control.start_feed(stream, announce)
        metrics.LEASES_HELD.set(len(self.held))

    def _overflow(self, stream: str) -> bool:
        released = self._released_round.get(stream)
        cooled = released is None or self._round - released > COOLDOWN_ROUNDS
        return self._vacant_rounds.get(stream, 0) >= OVERFLOW_ROUNDS and cooled

    async def _release_surplus(self, count: int) -> None:
        """Give up ``count`` tables, as many as fit in half a tick: the tables kept
        must be renewed (next round) before their fence; the rest waits a round."""
        started = self._now()
        least_wanted = sorted(self.held, key=lambda s: rank(self.worker_id, s), reverse=True)
        for stream in least_wanted[:count]:
            if self._now() - started >= self.tick / 2:
                self._wake.set()  # more to give up: the next round comes at once
                break
            try:
                await asyncio.wait_for(self.control.stop_feed(stream), self.tick)
            except asyncio.TimeoutError:
                self.control.drop_feed(stream)
            self.held.pop(stream, None)
            self._released_round[stream] = self._round
            await self.store.release([stream])
            logger.info("%s: lease released to balance %d worker(s)", stream, len(self.live))

    async def _fence_forever(self) -> None:
        """Stop the feeds whose lease could not be renewed in time."""
        while True:
            await asyncio.sleep(self.tick / 4)
            now = self._now()
            for stream, deadline in list(self.held.items()):
                if now >= deadline:
                    logger.error(
                        "%s: lease not renewed for %.1f s (Redis unreachable?); stopped "
                        "following it before it can expire",
                        stream,
                        self.fence_after,
                    )
                    self._drop(stream)

    def _drop(self, stream: str) -> None:
        """Stop following ``stream`` at once: it is no longer ours to send."""
        self.held.pop(stream, None)
        try:
            self.control.drop_feed(stream)
        except Exception:  # the other tables' fencing and renewals must go on
            logger.exception("%s: stopping its feed failed", stream)
        metrics.LEASES_HELD.set(len(self.held))
