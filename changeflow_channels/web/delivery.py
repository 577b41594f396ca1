"""The consumer's side of ordered delivery: it performs what subscriptions decide.

Each subscription's rules (positions, gaps, resync, sync requests and their
timeouts) are ``subscriptions.Subscription``'s, as plain code. Here are the
``changeflow.*`` handlers of ``ChangeflowConsumer`` that feed it events and do
what its actions say: row rules, filters and frames (``web/seen.py``; each
change's encoded once per process), sync requests, and timers. A timer only puts an event into the
consumer's own queue (``LocalEvents``, ``web/local_events.py``): it reaches ``dispatch`` like any
message, so nothing changes a subscription while another message is handled.

No frame exceeds ``CHANGEFLOW_MAX_SENT_FRAME_BYTES``: batches and snapshots are
split (``protocol.pack``, ``protocol.snapshot_texts``), a change too large is a
``too_large`` error frame. A change a subscription has moved past but could not
be made into a frame restarts the subscription with ``resync`` (``perform``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from channels.consumer import get_handler_name

from ..changes import BATCH_TYPE, CHANGE_TYPE
from ..permissions import has_row_rule
from ..redis_layer import LAYER_ERRORS
from ..sync import SYNC_TYPE, sync_channel
from .actions import (
    Action,
    CancelTimers,
    Deliver,
    RequestSync,
    Resync,
    RetrySyncLater,
    Snapshot,
    TimeOutLater,
)
from .filters import seen_through
from .local_events import LocalEvents
from .protocol import SEND_FAILED, batch_text, change_frame, encode, fits, pack
from .seen import _ENDED, Frames, SeenMixin
from .subscriptions import Subscription

logger = logging.getLogger(__name__)

LIVE_TYPES = (CHANGE_TYPE, BATCH_TYPE)
# The consumer's own events (timers), through its dispatch.
SYNC_RETRY_TYPE = "changeflow.sync.retry"
SYNC_TIMEOUT_TYPE = "changeflow.sync.timeout"
# A batch message's whole ``batch`` frame, encoded once per process, when sent whole.
ENCODED_BATCH = "_changeflow_frames"

__all__ = ["DeliveryMixin", "Frames", "LocalEvents"]  # LocalEvents: web/local_events.py


class DeliveryMixin(SeenMixin):
    """The ``changeflow.change`` / ``changeflow.batch`` / ``changeflow.sync.*`` /
    ``changeflow.layer_recovered`` handlers of ``ChangeflowConsumer``. Needs
    ``send_frame``, ``_leave``, ``channel_layer``, ``channel_name``, ``settings``,
    ``policy``, ``user``, ``events`` (``LocalEvents``) and
    ``subscriptions: dict[tuple[stream, name], Subscription]``."""

    subscriptions: dict[tuple[str, Any], Subscription]
    channel_layer: Any
    channel_name: str
    settings: Any
    policy: Any
    user: Any
    events: LocalEvents

    send_frame: Callable[..., Awaitable[None]]  # the consumer's: (frame, read_at=None)
    _leave: Callable[[tuple[str, Any]], Awaitable[None]]  # ends a subscription

    def subscriptions_of(self, stream: str) -> list[Subscription]:
        return [sub for sub in self.subscriptions.values() if sub.stream == stream]

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Changes skip Channels' ``close_old_connections`` before each message (a
        hop to the one sync thread per message and client: what made fan-out slow),
        unless the policy's row rule, which may use the database, is asked."""
        kind = message.get("type")
        if not isinstance(kind, str) or not kind.startswith("changeflow."):
            await super().dispatch(message)  # type: ignore[misc]
            return
        try:
            policy = getattr(self, "policy", None)
            if kind in LIVE_TYPES and policy is not None and not has_row_rule(policy):
                await getattr(self, get_handler_name(message))(message)
            else:
                await super().dispatch(message)  # type: ignore[misc]
        except Exception:  # one message's boundary
            # A bug must not close the connection. What fails while a subscription's
            # actions are performed is caught in ``perform`` (the subscription starts
            # afresh, with ``resync``), so no change is skipped silently here.
            logger.exception("delivering a %r message failed; the connection stays open", kind)

    # -- events ------------------------------------------------------------------

    async def changeflow_change(self, message: dict[str, Any]) -> None:
        frames: Frames = []
        try:
            for sub in self.subscriptions_of(f"{message['database']}.{message['table']}"):
                await self.perform(sub, sub.offer(message), frames)
        finally:
            for text, read_at in frames:
                await self.send_frame(text, read_at)

    async def changeflow_batch(self, message: dict[str, Any]) -> None:
        """The frames of a batch go to the client as one ``batch`` frame, in order."""
        if await self._send_whole_batch(message):
            return
        frames: Frames = []
        try:
            for change in message["changes"]:
                for sub in self.subscriptions_of(f"{change['database']}.{change['table']}"):
                    await self.perform(sub, sub.offer(change), frames)
        finally:  # on a failure, what was delivered before it
            # As one ``batch`` frame, or several when one would exceed the bound.
            for text, read_at in pack(frames, self.settings.max_sent_frame_bytes):
                await self.send_frame(text, read_at)

    async def _send_whole_batch(self, message: dict[str, Any]) -> bool:
        """The common case, without a step per change: one plain subscription (no
        ``sub``, no filter, no row rule) that the batch continues exactly. Its
        ``batch`` frame is encoded once per process, for every client."""
        changes = message["changes"]
        subs = self.subscriptions_of(f"{message['database']}.{message['table']}")
        if len(subs) != 1:
            return False
        sub = subs[0]
        if sub.name is not None or sub.filter is not None or has_row_rule(self.policy):
            return False
        text = message.get(ENCODED_BATCH)
        if text is None:
            frames = encode([change_frame(change) for change in changes])
            text = message[ENCODED_BATCH] = batch_text(frames)
        if not fits(text, self.settings.max_sent_frame_bytes) or not sub.take_batch(changes):
            return False  # too large for one frame: change by change, in several
        await self.send_frame(text, changes[0].get("read_at"))
        return True

    async def changeflow_sync_result(self, message: dict[str, Any]) -> None:
        await self._answer(message.get("id"), lambda sub: sub.sync_answered(message))

    async def changeflow_sync_retry(self, message: dict[str, Any]) -> None:
        await self._answer(message.get("id"), lambda sub: sub.retry_due(message["id"]))

    async def changeflow_sync_timeout(self, message: dict[str, Any]) -> None:
        await self._answer(message.get("id"), lambda sub: sub.timed_out(message["id"]))

    async def _answer(self, request_id: Any, event: Callable[[Subscription], list[Action]]) -> None:
        """An event of the subscription whose sync request is ``request_id``."""
        sub = next((s for s in self.subscriptions.values() if s.pending == request_id), None)
        if sub is None or request_id is None:
            return  # about an older request, or a subscription gone since
        frames: Frames = []
        try:
            await self.perform(sub, event(sub), frames)
        finally:
            for text, read_at in frames:
                await self.send_frame(text, read_at)

    async def changeflow_layer_recovered(self, message: dict[str, Any]) -> None:
        """The channel layer came back (Redis restarted): our group memberships
        and any change sent meanwhile are gone. Rejoin, then ask what we missed."""
        for stream in {sub.stream for sub in self.subscriptions.values()}:
            try:
                await self.channel_layer.group_add(stream, self.channel_name)
            except LAYER_ERRORS as error:
                logger.warning("could not rejoin %s: %r", stream, error)
        frames: Frames = []  # e.g. a resync, when asking fails (``perform``)
        try:
            for sub in list(self.subscriptions.values()):
                await self.perform(sub, sub.layer_recovered(), frames)
        finally:
            for text, read_at in frames:
                await self.send_frame(text, read_at)

    async def changeflow_epoch(self, message: dict[str, Any]) -> None:
        """A table's feed began a new epoch (``changeflow.epoch``): its subscribers
        resync at once (see ``Subscription.epoch_started``)."""
        frames: Frames = []
        try:
            for sub in self.subscriptions_of(f"{message['database']}.{message['table']}"):
                actions = sub.epoch_started(
                    message["epoch"],
                    message["seq"],
                    bool(message.get("since_creation")),
                    bool(message.get("again")),
                )
                await self.perform(sub, actions, frames)
        finally:
            for text, read_at in frames:
                await self.send_frame(text, read_at)

    # -- actions -----------------------------------------------------------------

    async def perform(self, sub: Subscription, actions: list[Action], frames: Frames) -> None:
        """Do what ``sub`` decided; its frames are added to ``frames``, for the
        caller to send. Stops when the subscription ends meanwhile (a row rule
        failed: nothing else can end it, all that does runs in ``dispatch``).

        The subscription's position is already past the changes it decided to
        deliver: when one of them cannot be made into a frame, the subscription
        starts afresh, and the client is told (``resync``, reason ``send_failed``)."""
        try:
            await self._perform(sub, actions, frames)
        except Exception:  # one subscription's boundary (row rules and filters: user data)
            logger.exception("delivering to %s failed; it starts afresh (resync)", sub.stream)
            await self._restart(sub, frames)

    async def _restart(self, sub: Subscription, frames: Frames) -> None:
        if self.subscriptions.get(sub.key) is not sub:
            return  # ended meanwhile
        fresh = Subscription(
            sub.stream,
            sub.database,
            sub.table,
            name=sub.name,
            filter=sub.filter,
            snapshot=sub.snapshot,
            sync_timeout=sub.sync_timeout,
            numbering=sub.numbering,  # its numbers go on: the client's duplicate check
        )
        self.subscriptions[sub.key] = fresh  # the old one's sync answers and timers find nothing
        frame = {"event": "resync", "stream": sub.stream, "reason": SEND_FAILED}
        frames.append((encode(sub.tag(frame)), None))
        await self._perform(fresh, fresh.start(None), frames)  # a snapshot, when it asks for one

    async def _perform(self, sub: Subscription, actions: list[Action], frames: Frames) -> None:
        for action in actions:
            if isinstance(action, Deliver):
                message = action.message
                change = message["change"]
                if has_row_rule(self.policy):
                    change = await self._row_rule(sub, change, frames)
                    if change is _ENDED:
                        return
                elif sub.filter is not None:
                    change = seen_through(change, sub.filter.matches)
                if change is not None:
                    frames.append(self._change_text(sub, message, change, action.live))
            elif isinstance(action, Resync):
                frame = {"event": "resync", "stream": sub.stream, "reason": action.reason}
                frames.append((encode(sub.tag(frame)), None))
            elif isinstance(action, Snapshot):
                if not await self._send_snapshot(sub, action, frames):
                    return
            elif isinstance(action, RequestSync):
                await self._send_sync(sub, action)
            elif isinstance(action, RetrySyncLater):
                event = {"type": SYNC_RETRY_TYPE, "id": action.request_id}
                self.events.later(action.delay, event, key=(action.request_id, SYNC_RETRY_TYPE))
            elif isinstance(action, TimeOutLater):
                event = {"type": SYNC_TIMEOUT_TYPE, "id": action.request_id}
                self.events.later(action.delay, event, key=(action.request_id, SYNC_TIMEOUT_TYPE))
            elif isinstance(action, CancelTimers):
                self.events.cancel((action.request_id, SYNC_RETRY_TYPE))
                if not action.keep_timeout:
                    self.events.cancel((action.request_id, SYNC_TIMEOUT_TYPE))

    async def _send_sync(self, sub: Subscription, request: RequestSync) -> None:
        since = request.since
        message = {
            "type": SYNC_TYPE,
            "database": sub.database,
            "table": sub.table,
            "reply_channel": self.channel_name,
            "id": request.request_id,
            "since": None if since is None else {"epoch": since[0], "seq": since[1]},
            "snapshot": request.snapshot,
        }
        try:
            await self.channel_layer.send(sync_channel(self.settings.channel), message)
        except LAYER_ERRORS as error:
            logger.warning("sync request for %s not sent: %r", sub.stream, error)
