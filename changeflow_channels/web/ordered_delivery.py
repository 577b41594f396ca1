"""Per-subscription delivery with no silent loss: positions, gap healing, resync.

The websocket consumer tracks, for each subscription, the ``(epoch, seq)`` of the
last change its client got. A change that is next in line is sent; one already
sent is dropped; one that skips ahead (the channel layer dropped messages) is
held while the missing changes are asked from the worker (``changeflow.sync``).
What cannot be filled or continued (a new epoch, a history that no longer
reaches back, a worker that does not answer) is announced as ``resync``, with a
fresh snapshot when the subscription asked for snapshots.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.consumer import get_handler_name

from ..changes import BATCH_TYPE, CHANGE_TYPE
from ..permissions import RowRuleError, apply_row_rule, has_row_rule
from ..sync import SYNC_TYPE, sync_channel
from .filters import Filter, seen_through
from .protocol import UNAVAILABLE, batch_text, change_frame, encode, error_frame

logger = logging.getLogger("changeflow_channels")

# A sync the worker says it cannot answer yet is asked again after this long.
SYNC_RETRY = 0.5
# An unanswered sync request is sent again this often (until CHANGEFLOW_SYNC_TIMEOUT).
SYNC_RESEND = 2.0
LIVE_TYPES = (CHANGE_TYPE, BATCH_TYPE)
# A change message's frame, encoded by the first consumer of this process that sends it.
ENCODED = "_changeflow_frame"
# The same for a batch message's whole ``batch`` frame, when sent whole.
ENCODED_BATCH = "_changeflow_frames"
# Changes held while waiting for a sync answer; beyond it the subscription resyncs.
MAX_HELD = 10_000


def _everything(document: Any) -> bool:
    return True


@dataclass
class Subscription:
    stream: str
    database: str
    table: str
    name: Any = None  # the client's "sub": several subscriptions to one stream
    filter: Filter | None = None
    snapshot: bool = False
    epoch: str | None = None
    seq: int | None = None  # None: nothing delivered yet, the first change sets the position
    pending: str | None = None  # id of the sync request in flight
    since: tuple[str | None, int] | None = None  # what that request resumes from
    held: list[dict[str, Any]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    given_up: bool = False

    @property
    def key(self) -> tuple[str, Any]:
        return (self.stream, self.name)

    def tag(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A frame of this subscription (named ones carry their ``sub``)."""
        if self.name is not None:
            frame["sub"] = self.name
        return frame


class OrderedDeliveryMixin:
    """The ``changeflow.change`` / ``changeflow.batch`` / ``changeflow.sync.result``
    handlers of ``ChangeflowConsumer``. Needs ``send_frame``, ``_leave``, ``channel_layer``,
    ``channel_name``, ``settings``, ``policy``, ``user`` and
    ``subscriptions: dict[tuple[stream, name], Subscription]``."""

    subscriptions: dict[tuple[str, Any], Subscription]
    channel_layer: Any
    channel_name: str
    settings: Any
    policy: Any
    user: Any

    send_frame: Callable[..., Awaitable[None]]  # the consumer's: (frame, read_at=None)
    _leave: Callable[[tuple[str, Any]], Awaitable[None]]  # ends a subscription

    def subscriptions_of(self, stream: str) -> list[Subscription]:
        return [sub for sub in self.subscriptions.values() if sub.stream == stream]

    # -- from the channel layer --------------------------------------------------

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
        except Exception:
            # A bug must not close the connection: positions are per change, so a
            # change skipped here is a gap the next one finds (and heals or resyncs).
            logger.exception("delivering a %r message failed; the connection stays open", kind)

    async def changeflow_change(self, message: dict[str, Any]) -> None:
        for sub in self.subscriptions_of(f"{message['database']}.{message['table']}"):
            await self._offer(sub, message)

    async def changeflow_batch(self, message: dict[str, Any]) -> None:
        """The frames of a batch go to the client as one ``batch`` frame, in order."""
        if await self._send_whole_batch(message):
            return
        frames: list[tuple[str, float | None]] = []
        self._collected = frames
        try:
            for change in message["changes"]:
                await self.changeflow_change(change)
        except Exception:
            self._collected = None
            await self._send_collected(frames)  # what was delivered before the failure
            raise
        finally:
            self._collected = None
        await self._send_collected(frames)

    async def _send_collected(self, frames: list[tuple[str, float | None]]) -> None:
        if len(frames) == 1:
            await self.send_frame(*frames[0])
        elif frames:
            read_at = next((at for _, at in frames if at is not None), None)
            events = ",".join(text for text, _ in frames)
            await self.send_frame(batch_text(f"[{events}]"), read_at)

    async def _send_whole_batch(self, message: dict[str, Any]) -> bool:
        """The common case, without a step per change: one plain subscription (no
        ``sub``, no filter, no row rule, no sync pending) and a batch that continues
        it exactly. Its ``batch`` frame is encoded once per process, for every client."""
        changes = message["changes"]
        first, last = changes[0], changes[-1]
        subs = self.subscriptions_of(f"{message['database']}.{message['table']}")
        if len(subs) != 1:
            return False
        sub = subs[0]
        if (
            sub.name is not None
            or sub.filter is not None
            or sub.pending is not None
            or has_row_rule(self.policy)
            or first["epoch"] != last["epoch"]
            or last["seq"] - first["seq"] != len(changes) - 1
            or (
                sub.seq is not None and (sub.epoch != first["epoch"] or first["seq"] != sub.seq + 1)
            )
        ):
            return False
        text = message.get(ENCODED_BATCH)
        if text is None:
            frames = encode([change_frame(change) for change in changes])
            text = message[ENCODED_BATCH] = batch_text(frames)
        sub.epoch, sub.seq = last["epoch"], last["seq"]
        await self.send_frame(text, first.get("read_at"))
        return True

    async def _out(self, frame: dict[str, Any] | str, read_at: float | None = None) -> None:
        """Send a frame, or keep it (encoded) for the batch being handled."""
        collected = getattr(self, "_collected", None)
        if collected is None:
            await self.send_frame(frame, read_at)
        else:
            collected.append((frame if isinstance(frame, str) else encode(frame), read_at))

    async def changeflow_sync_result(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        sub = next((s for s in self.subscriptions.values() if s.pending == request_id), None)
        if sub is None or request_id is None:
            return  # an answer to an older request, or to a subscription gone since
        if message.get("resync") == "unavailable":
            # The feed is restarting: ask again shortly, still holding changes.
            asyncio.get_running_loop().call_later(SYNC_RETRY, self._retry_sync, sub, sub.pending)
            return
        self._settle(sub)
        if message.get("resync"):
            await self._send_resync(sub, message["resync"])
        snapshot = message.get("snapshot")
        if snapshot is not None:
            sub.epoch, sub.seq = message["epoch"], message["seq"]
            try:
                documents = await self._visible_documents(sub, snapshot["documents"])
            except RowRuleError as error:
                await self._row_rule_failed(sub, error)
                return
            await self.send_frame(
                sub.tag(
                    {
                        "event": "snapshot",
                        "stream": sub.stream,
                        "documents": documents,
                        "truncated": snapshot["truncated"],
                        "epoch": sub.epoch,
                        "seq": sub.seq,
                    }
                )
            )
        elif message.get("changes") is not None:
            for change in message["changes"]:
                if sub.seq is None or change["seq"] > sub.seq:
                    sub.epoch, sub.seq = change["epoch"], change["seq"]
                    await self._emit(sub, change, live=False)
            sub.epoch, sub.seq = message["epoch"], message["seq"]
        else:
            sub.epoch, sub.seq = message["epoch"], message["seq"]
        await self._release_held(sub)

    async def changeflow_layer_recovered(self, message: dict[str, Any]) -> None:
        """The channel layer came back (Redis restarted): our group memberships
        and any change sent meanwhile are gone. Rejoin, then ask what we missed."""
        for stream in {sub.stream for sub in self.subscriptions.values()}:
            try:
                await self.channel_layer.group_add(stream, self.channel_name)
            except Exception as error:
                logger.warning("could not rejoin %s: %r", stream, error)
        for sub in list(self.subscriptions.values()):
            if sub.pending is None and sub.seq is not None:
                await self._request_sync(sub, since=(sub.epoch, sub.seq))
            elif sub.pending is None and sub.snapshot:
                await self._request_sync(sub, since=None)

    # -- the rules ---------------------------------------------------------------

    async def _offer(self, sub: Subscription, message: dict[str, Any]) -> None:
        if sub.pending is not None:
            if len(sub.held) >= MAX_HELD:
                sub.held.clear()
                sub.given_up = True  # announced when the answer (or the timeout) comes
            else:
                sub.held.append(message)
            return
        epoch, seq = message["epoch"], message["seq"]
        if sub.seq is None:
            sub.epoch, sub.seq = epoch, seq  # a plain subscription starts where it joins
        elif epoch != sub.epoch:
            if sub.epoch is None and sub.seq == 0 and seq == 1:
                sub.epoch, sub.seq = epoch, seq  # the table appeared: its very first change
            elif sub.epoch is None and sub.seq == 0:
                sub.held.append(message)  # appeared, but we missed its first changes
                await self._request_sync(sub, since=(epoch, 0))
                return
            else:
                await self._new_epoch(sub, message)
                return
        elif seq <= sub.seq:
            return  # already delivered
        elif seq == sub.seq + 1:
            sub.seq = seq
        else:
            sub.held.append(message)  # a gap: fill it first
            await self._request_sync(sub, since=(sub.epoch, sub.seq))
            return
        await self._emit(sub, message)

    # -- what the client may see -------------------------------------------------

    async def _emit(self, sub: Subscription, message: dict[str, Any], *, live: bool = True) -> None:
        """Send one change as this subscription sees it: through the policy's row
        rule and the subscription's filter (a hidden change sends nothing).
        Replayed (not ``live``) changes stay out of the send lag metric."""
        if self.subscriptions.get(sub.key) is not sub:
            return  # ended meanwhile (a row rule failed, a re-check, an unsubscribe)
        change = message["change"]
        if has_row_rule(self.policy):
            try:
                change = await apply_row_rule(self.policy, self.user, sub.stream, change)
            except RowRuleError as error:
                await self._row_rule_failed(sub, error)
                return
            if self.subscriptions.get(sub.key) is not sub:
                return  # ended while the rule ran: its end is already on its way
            if change is not None:
                change = seen_through(change, sub.filter.matches if sub.filter else _everything)
        elif sub.filter is not None:
            change = seen_through(change, sub.filter.matches)
        if change is None:
            return
        read_at = message.get("read_at") if live else None
        if change is not message["change"]:
            await self._out(sub.tag(change_frame({**message, "change": change})), read_at)
        elif sub.name is None:
            # The same text for every client of this process: encoded once.
            text = message.get(ENCODED)
            if text is None:
                text = message[ENCODED] = encode(change_frame(message))
            await self._out(text, read_at)
        else:
            await self._out(sub.tag(change_frame(message)), read_at)

    async def _row_rule_failed(self, sub: Subscription, error: RowRuleError) -> None:
        """Nothing of the stream may be shown when the rule cannot say what: the
        subscription ends, and the client is told (after what it already got)."""
        logger.error("row rule failed on %s; ending the subscription: %s", sub.stream, error)
        await self._leave(sub.key)
        message = (
            f"your subscription to {sub.stream} has ended: the server could not check your rows"
        )
        await self._out(sub.tag(error_frame(UNAVAILABLE, message)))

    async def _visible_documents(
        self, sub: Subscription, documents: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        visible = []
        for document in documents:
            initial = {"type": "initial", "old_val": None, "new_val": document}
            change = await apply_row_rule(self.policy, self.user, sub.stream, initial)
            if change is None or change.get("new_val") is None:
                continue
            if sub.filter is None or sub.filter.matches(change["new_val"]):
                visible.append(change["new_val"])
        return visible

    async def _new_epoch(self, sub: Subscription, message: dict[str, Any]) -> None:
        """The feed restarted: what the client holds may miss changes."""
        if sub.snapshot:
            await self._send_resync(sub, "epoch_changed")
            sub.held.append(message)
            await self._request_sync(sub, since=None)
            return
        await self._send_resync(sub, "epoch_changed")
        sub.epoch, sub.seq = message["epoch"], message["seq"]
        await self._emit(sub, message)

    async def _release_held(self, sub: Subscription) -> None:
        if sub.given_up:
            sub.given_up = False
            await self._send_resync(sub, "history_exceeded")
            if sub.snapshot:
                await self._request_sync(sub, since=None)
                return
        held, sub.held = sub.held, []
        for index, message in enumerate(held):
            if sub.pending is not None:  # a new gap: keep the rest for later
                sub.held.extend(held[index:])
                return
            await self._offer(sub, message)

    async def _send_resync(self, sub: Subscription, reason: str) -> None:
        await self._out(sub.tag({"event": "resync", "stream": sub.stream, "reason": reason}))

    # -- asking the worker ------------------------------------------------------

    async def _request_sync(self, sub: Subscription, since: tuple[str | None, int] | None) -> None:
        sub.pending = uuid.uuid4().hex
        sub.since = since
        loop = asyncio.get_running_loop()
        sub.timer = loop.call_later(
            self.settings.sync_timeout, self._sync_timed_out, sub, sub.pending
        )
        # A request (or its answer) can be lost on a full channel: ask again meanwhile.
        for resend in range(1, int(self.settings.sync_timeout / SYNC_RESEND)):
            loop.call_later(resend * SYNC_RESEND, self._retry_sync, sub, sub.pending)
        await self._send_sync(sub)

    async def _send_sync(self, sub: Subscription) -> None:
        since = sub.since
        request = {
            "type": SYNC_TYPE,
            "database": sub.database,
            "table": sub.table,
            "reply_channel": self.channel_name,
            "id": sub.pending,
            "since": None if since is None else {"epoch": since[0], "seq": since[1]},
            "snapshot": sub.snapshot,
        }
        try:
            await self.channel_layer.send(sync_channel(self.settings.channel), request)
        except Exception as error:
            logger.warning("sync request for %s not sent: %r", sub.stream, error)

    def _retry_sync(self, sub: Subscription, request_id: str) -> None:
        if sub.pending == request_id and self.subscriptions.get(sub.key) is sub:
            asyncio.ensure_future(self._send_sync(sub))  # noqa: RUF006 - short-lived

    def _sync_timed_out(self, sub: Subscription, request_id: str) -> None:
        if sub.pending == request_id and self.subscriptions.get(sub.key) is sub:
            asyncio.ensure_future(self._give_up(sub))  # noqa: RUF006 - short-lived

    async def _give_up(self, sub: Subscription) -> None:
        """The worker did not answer: say so. A snapshot subscription keeps asking
        for its snapshot (a resync is always followed by one); a plain one goes
        on from the changes held."""
        logger.warning("no sync answer for %s within %g s", sub.stream, self.settings.sync_timeout)
        self._settle(sub)
        sub.given_up = False
        await self._send_resync(sub, "unavailable")
        sub.epoch, sub.seq = None, None  # the next change (or snapshot) sets the position
        if sub.snapshot:
            await self._request_sync(sub, since=None)
            return
        await self._release_held(sub)

    def _settle(self, sub: Subscription) -> None:
        sub.pending = None
        if sub.timer is not None:
            sub.timer.cancel()
            sub.timer = None

    def forget(self, sub: Subscription) -> None:
        """The subscription ended: stop its timer."""
        self._settle(sub)
