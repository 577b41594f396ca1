"""One subscription's delivery rules, as plain code: events in, actions out.

A subscription tracks the ``(epoch, seq)`` of the last change its client got. A
change that is next in line is delivered; one already delivered is dropped; one
that skips ahead (the channel layer dropped messages) is held while the missing
changes are asked from the worker (``changeflow.sync``). What cannot be filled
or continued (a new epoch, a history that no longer reaches back, a worker that
does not answer) is announced as ``resync``, with a fresh snapshot when the
subscription asked for snapshots.

Nothing here does I/O, starts a task or a timer: each event method returns the
actions the consumer performs, in order (``web/delivery.py``). A timer the
consumer starts for ``RetrySyncLater`` or ``TimeOutLater`` comes back as
``retry_due`` or ``timed_out``; ``CancelTimers`` says when a request's timers are
no longer wanted (it was answered, or replaced).

A sync request goes out again while unanswered, less and less often (backoff
with jitter: after a Redis restart every subscription asks at once, and their
resends must not come in waves). A large answer comes in pages (``part``,
``last``), put back together here.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..changes import EPOCH_TYPE
from ..sync import SyncPages
from .actions import (
    Action,
    CancelTimers,
    Deliver,
    Position,
    RequestSync,
    Resync,
    RetrySyncLater,
    Snapshot,
    TimeOutLater,
)
from .filters import Filter
from .positions import Numbering

logger = logging.getLogger(__name__)

# A sync the worker says it cannot answer yet is asked again after about this long.
SYNC_RETRY = 0.5
# An unanswered sync request is sent again after about this long, then after twice
# as long each time (up to SYNC_RESEND_MAX), until its timeout.
SYNC_RESEND = 2.0
SYNC_RESEND_MAX = 8.0
# Each of those delays is multiplied by a random factor in this range (jitter).
JITTER = (0.5, 1.5)
# Epochs a subscription has left (they never come back): their late changes are stale.
LEFT_EPOCHS = 8
# Changes held while waiting for a sync answer; beyond it the subscription resyncs.
MAX_HELD = 10_000


@dataclass(eq=False)
class Subscription:
    stream: str
    database: str
    table: str
    name: Any = None  # the client's "sub": several subscriptions to one stream
    filter: Filter | None = None
    snapshot: bool = False
    sync_timeout: float = 10.0  # seconds a sync request waits for its answer
    epoch: str | None = None
    seq: int | None = None  # None: nothing delivered yet, the first change sets the position
    pending: str | None = None  # id of the sync request in flight
    since: Position | None = None  # what that request resumes from
    held: list[dict[str, Any]] = field(default_factory=list)
    given_up: bool = False  # held changes were dropped (MAX_HELD): resync when settled
    # The request in flight: seconds of resends scheduled so far, the next resend's
    # delay (before jitter), and the pages of its answer received so far.
    waited: float = 0.0
    resend_delay: float = SYNC_RESEND
    pages: SyncPages = field(default_factory=SyncPages)
    left: deque[str] = field(default_factory=lambda: deque(maxlen=LEFT_EPOCHS))
    # Under a row rule: the subscription's own numbers for its frames (web/positions.py);
    # the position above stays the real one, for gaps and resuming with the worker.
    numbering: Numbering | None = None

    @property
    def key(self) -> tuple[str, Any]:
        return (self.stream, self.name)

    def tag(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A frame of this subscription (named ones carry their ``sub``)."""
        if self.name is not None:
            frame["sub"] = self.name
        return frame

    # -- events ------------------------------------------------------------------

    def start(self, since: Position | None = None, *, lost: bool = False) -> list[Action]:
        """Just subscribed: resume after ``since``, or take a snapshot first.
        ``lost``: the client asked to resume from a position it cannot be given
        (under a row rule, a ``since`` without a valid cursor): it is told
        ``resync`` (``no_position``), and starts as a new subscription."""
        actions: list[Action] = []
        if lost:
            actions.append(Resync("no_position"))
        if since is not None:
            self.epoch, self.seq = since
            self._request(since, actions)
        elif self.snapshot:
            self._request(None, actions)
        return actions

    def offer(self, message: dict[str, Any]) -> list[Action]:
        """A change message of the stream, from the channel layer."""
        seq = message["seq"]
        if (  # the common case first: next in line
            self.pending is None
            and self.seq is not None
            and seq == self.seq + 1
            and message["epoch"] == self.epoch
        ):
            self.seq = seq
            return [Deliver(message)]
        actions: list[Action] = []
        self._offer(message, actions)
        return actions

    def take_batch(self, changes: list[dict[str, Any]]) -> bool:
        """Whether a batch continues this subscription exactly (one epoch,
        consecutive, right after its position, no sync pending): then all of it
        is delivered as it is, and the position moves past it. Otherwise nothing
        changes, and each change is to be ``offer``-ed."""
        first, last = changes[0], changes[-1]
        if (
            self.pending is not None
            or first["epoch"] in self.left
            or first["epoch"] != last["epoch"]
            or last["seq"] - first["seq"] != len(changes) - 1
            or (
                self.seq is not None
                and (self.epoch != first["epoch"] or first["seq"] != self.seq + 1)
            )
        ):
            return False
        self.epoch, self.seq = last["epoch"], last["seq"]
        return True

    def sync_answered(self, message: dict[str, Any]) -> list[Action]:
        """The worker's ``changeflow.sync.result``, or one page of it (ignored
        unless it answers the request in flight)."""
        if self.pending is None or message.get("id") != self.pending:
            return []  # an answer to an older request
        if message.get("resync") == "unavailable":
            return self.sync_unavailable()
        whole = self.pages.add(message)
        if whole is None:
            return []  # more pages to come
        message = whole
        actions: list[Action] = []
        self._settle(actions)
        if message.get("resync"):
            actions.append(Resync(message["resync"]))
        snapshot = message.get("snapshot")
        if snapshot is not None:
            self._move(message["epoch"], message["seq"])
            actions.append(
                Snapshot(
                    snapshot["documents"], snapshot["truncated"], message["epoch"], message["seq"]
                )
            )
        elif message.get("changes") is not None:
            for change in message["changes"]:
                if self.seq is None or change["seq"] > self.seq:
                    self.epoch, self.seq = change["epoch"], change["seq"]
                    actions.append(Deliver(change, live=False))
            self._move(message["epoch"], message["seq"])
        else:
            self._move(message["epoch"], message["seq"])
        self._release_held(actions)
        return actions

    def sync_unavailable(self) -> list[Action]:
        """The worker cannot answer yet (the feed is restarting): ask again
        shortly (instead of the resend planned), still holding changes."""
        if self.pending is None:
            return []
        self.pages.clear()
        self.resend_delay = SYNC_RESEND
        delay = SYNC_RETRY * random.uniform(*JITTER)
        return [CancelTimers(self.pending, keep_timeout=True), RetrySyncLater(self.pending, delay)]

    def retry_due(self, request_id: str) -> list[Action]:
        """Time to send the request again (when it is still unanswered); the
        next resend, if any, comes after twice as long."""
        if self.pending is None or request_id != self.pending:
            return []
        actions: list[Action] = [RequestSync(self.pending, self.since, self.snapshot)]
        self._resend_later(actions)
        return actions

    def timed_out(self, request_id: str) -> list[Action]:
        """The worker did not answer in time: say so. A snapshot subscription
        keeps asking for its snapshot (a resync is always followed by one); a
        plain one goes on from the changes held."""
        if self.pending is None or request_id != self.pending:
            return []
        logger.warning("no sync answer for %s within %g s", self.stream, self.sync_timeout)
        actions: list[Action] = []
        self._settle(actions)
        self.given_up = False
        actions.append(Resync("unavailable"))
        self.epoch, self.seq = None, None  # the next change (or snapshot) sets the position
        if self.snapshot:
            self._request(None, actions)
            return actions
        self._release_held(actions)
        return actions

    def layer_recovered(self) -> list[Action]:
        """The channel layer came back: changes sent meanwhile are lost. Ask
        what was missed (unless a request is in flight already)."""
        actions: list[Action] = []
        if self.pending is None and self.seq is not None:
            self._request((self.epoch, self.seq), actions)
        elif self.pending is None and self.snapshot:
            self._request(None, actions)
        return actions

    def epoch_started(
        self, epoch: str, seq: int, since_creation: bool = False, again: bool = False
    ) -> list[Action]:
        """The table's feed began ``epoch`` and caught up after its change ``seq``
        (``changeflow.epoch``, in order with the changes). Changes written while
        the feed was down are not replayed: a subscription in another epoch is
        told at once (``resync``; a snapshot subscription asks for a fresh
        snapshot), not when the next change comes. ``since_creation``: the
        epoch's changes start with the table's creation, nothing can be missed
        before them. ``again``: the stream's position announced again after
        the worker found member channels full (changes up to ``seq`` missed are
        asked for). With a sync in flight, decided once it is answered."""
        marker = {
            "type": EPOCH_TYPE,
            "epoch": epoch,
            "seq": seq,
            "since_creation": since_creation,
            "again": again,
        }
        actions: list[Action] = []
        if self.pending is not None:
            self.held.append(marker)  # its answer may predate the epoch
        else:
            self._epoch_started(marker, actions)
        return actions

    # -- the rules ---------------------------------------------------------------

    def _epoch_started(self, marker: dict[str, Any], actions: list[Action]) -> None:
        epoch, seq = marker["epoch"], marker["seq"]
        if epoch in self.left:
            return  # announced late (an old holder's, or queued behind the new epoch): stale
        if marker.get("again") and self.seq is None:
            return  # a position announced again; nothing delivered yet: it starts where it joins
        if self.seq is not None and epoch == self.epoch:
            if seq > self.seq:  # changes of this epoch went missing: fill the gap
                self._request((self.epoch, self.seq), actions)
            return
        if marker["since_creation"] and (
            self.seq is None or (self.epoch is None and self.seq == 0)
        ):
            # The epoch announces everything since the table's creation: nothing is
            # missed, but the changes announced before this point by one that knew
            # the table as missing, (None, 0), and did not see them.
            if self.seq is not None and seq > 0:
                self._request((epoch, 0), actions)
            elif self.seq is not None:
                self.epoch, self.seq = epoch, seq
            return
        if not self.snapshot and any(isinstance(action, Resync) for action in actions):
            # Told to reload by this very event: the reload comes after this epoch began.
            self._move(epoch, seq)
            return
        actions.append(Resync("epoch_changed"))
        if self.snapshot:
            self._request(None, actions)
            return
        self._move(epoch, seq)

    def _offer(self, message: dict[str, Any], actions: list[Action]) -> None:
        if message["epoch"] in self.left:
            return  # a late change of an epoch this subscription has left: stale
        if self.pending is not None:
            if len(self.held) >= MAX_HELD:
                self.held.clear()
                self.given_up = True  # announced when the answer (or the timeout) comes
            else:
                self.held.append(message)
            return
        epoch, seq = message["epoch"], message["seq"]
        if self.seq is None:
            self.epoch, self.seq = epoch, seq  # a plain subscription starts where it joins
        elif epoch != self.epoch:
            if self.epoch is None and self.seq == 0 and seq == 1:
                self.epoch, self.seq = epoch, seq  # the table appeared: its very first change
            elif self.epoch is None and self.seq == 0:
                self.held.append(message)  # appeared, but we missed its first changes
                self._request((epoch, 0), actions)
                return
            else:
                self._new_epoch(message, actions)
                return
        elif seq <= self.seq:
            return  # already delivered
        elif seq == self.seq + 1:
            self.seq = seq
        else:
            self.held.append(message)  # a gap: fill it first
            self._request((self.epoch, self.seq), actions)
            return
        actions.append(Deliver(message))

    def _new_epoch(self, message: dict[str, Any], actions: list[Action]) -> None:
        """The feed restarted: what the client holds may miss changes."""
        actions.append(Resync("epoch_changed"))
        if self.snapshot:
            self.held.append(message)
            self._request(None, actions)
            return
        self._move(message["epoch"], message["seq"])
        actions.append(Deliver(message))

    def _release_held(self, actions: list[Action]) -> None:
        if self.given_up:
            self.given_up = False
            actions.append(Resync("history_exceeded"))
            if self.snapshot:
                self._request(None, actions)
                return
        held, self.held = self.held, []
        for index, message in enumerate(held):
            if self.pending is not None:  # a new gap: keep the rest for later
                self.held.extend(held[index:])
                return
            if message.get("type") == EPOCH_TYPE:
                self._epoch_started(message, actions)
            else:
                self._offer(message, actions)

    def _move(self, epoch: str | None, seq: int) -> None:
        """The position is now ``(epoch, seq)``. An epoch left never comes back
        (each is new): changes of it that arrive late are dropped (``left``), never
        taken for yet another new epoch (and another ``resync``)."""
        if self.epoch is not None and epoch != self.epoch and self.epoch not in self.left:
            self.left.append(self.epoch)
        self.epoch, self.seq = epoch, seq

    def _request(self, since: Position | None, actions: list[Action]) -> None:
        if self.pending is not None:
            actions.append(CancelTimers(self.pending))  # replaced
        self.pending = request_id = uuid.uuid4().hex
        self.since = since
        self.pages.clear()
        self.waited, self.resend_delay = 0.0, SYNC_RESEND
        actions.append(RequestSync(request_id, since, self.snapshot))
        actions.append(TimeOutLater(request_id, self.sync_timeout))
        self._resend_later(actions)

    def _resend_later(self, actions: list[Action]) -> None:
        """A request (or its answer) can be lost on a full channel: it is sent again
        if still unanswered after a while (doubling, with jitter), before its timeout."""
        assert self.pending is not None
        delay = self.resend_delay * random.uniform(*JITTER)
        if self.waited + delay >= self.sync_timeout:
            return
        self.waited += delay
        self.resend_delay = min(self.resend_delay * 2, SYNC_RESEND_MAX)
        actions.append(RetrySyncLater(self.pending, delay))

    def _settle(self, actions: list[Action]) -> None:
        """The request in flight is over (answered, or timed out): its timers go."""
        if self.pending is not None:
            actions.append(CancelTimers(self.pending))
        self.pending = None
        self.pages.clear()
