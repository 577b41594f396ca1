"""The websocket consumer browsers talk to (the worker's push consumer is in
``worker/push_consumer.py``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer

from . import metrics
from .conf import get_settings
from .frame_limits import FrameTooLarge, check_frame_size
from .names import parse_stream
from .permissions import ask, has_row_rule, load_policy
from .redis_layer import LAYER_ERRORS, ResilientChannelMixin, group_discard_retrying
from .sync import SyncError, parse_client_since
from .web.delivery import DeliveryMixin, Frames
from .web.filters import FilterError, parse_filter
from .web.limits import AckError, RateLimited, SendWindow, SubscribeLimits, TokenBucket
from .web.local_events import LocalEvents
from .web.positions import resume_from, site_cursors
from .web.protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    NOT_FOUND,
    RATE_LIMITED,
    UNAVAILABLE,
    FrameError,
    byte_size,
    encode,
    error_frame,
    fits,
    parse_frame,
)
from .web.pushing import PushMixin
from .web.recheck import RECHECK, RecheckMixin
from .web.subscriptions import Subscription

logger = logging.getLogger(__name__)

# A client whose frames keep being refused (beyond this rate) is closed with CLOSE_ABUSE.
ERRORS_PER_SECOND = 5.0
ERROR_BURST = 50.0
CLOSE_ABUSE = 4008
# A client that reads slower than its frames come (CHANGEFLOW_SEND_QUEUE frames behind,
# while CHANGEFLOW_SEND_WINDOW frames it has not acknowledged are out).
CLOSE_TOO_SLOW = 4009
# A frame could not be sent (the ASGI server refused it): the client missed it, and
# resumes (``since``) on a new connection.
CLOSE_SEND_FAILED = 4011
# The project has no channel layer (CHANNEL_LAYERS): the server cannot work (1011: internal error).
CLOSE_NO_LAYER = 1011


def check_sub_name(name: Any, request_id: Any) -> Any:
    """A subscription's ``sub``: None, a short string or a whole number."""
    if name is None:
        return None
    if (
        isinstance(name, bool)
        or not isinstance(name, str | int)
        or len(str(name)) > 100
        or (isinstance(name, int) and not -(2**53) <= name <= 2**53)  # JSON.parse keeps it
    ):
        raise FrameError(BAD_REQUEST, "sub must be a short string or a whole number", request_id)
    return name


class ChangeflowConsumer(
    ResilientChannelMixin, DeliveryMixin, PushMixin, RecheckMixin, AsyncWebsocketConsumer
):
    """Speaks the browser protocol: subscribe, unsubscribe and push by ``db.table``.

    Delivery (positions, gaps, snapshots, resync) is ``web.subscriptions``' rules,
    performed by ``DeliveryMixin``. Everything that touches subscriptions runs in
    ``dispatch``, one message at a time: timers (sync timeouts, permission
    re-checks) come back as events through it (``LocalEvents``)."""

    async def connect(self) -> None:
        self.settings = get_settings()
        if self.channel_layer is None:
            await self._refuse_without_layer()
            return
        self.policy = load_policy(self.settings.permissions)
        rate = self.settings.push_rate
        self.push_bucket = TokenBucket(rate=rate, burst=max(1.0, 2 * rate))
        self.error_bucket = TokenBucket(rate=ERRORS_PER_SECOND, burst=ERROR_BURST)
        settings = self.settings
        self.subscribe_limits = SubscribeLimits(
            settings.subscribe_rate, settings.sync_rate, settings.sync_burst
        )
        self.events.later(self.settings.recheck_every, RECHECK)
        metrics.WEBSOCKET_CLIENTS.inc()
        # Frames wait here for the server to take them. A client that cannot keep
        # up fills it and is disconnected, instead of making memory grow.
        # (frame, read_at): read_at of a live change frame, for the send lag metric.
        self.outgoing: asyncio.Queue[tuple[str, float | None]] = asyncio.Queue(
            maxsize=self.settings.send_queue
        )
        # Frames sent and not yet acknowledged (``ack``): the writer waits past the window.
        self.window = SendWindow(self.settings.send_window, self.settings.send_window_bytes)
        self.window_open = asyncio.Event()
        self.writer = asyncio.ensure_future(self._write_forever())
        self.subscriptions: dict[tuple[str, Any], Subscription] = {}
        await self.accept()

    async def _refuse_without_layer(self) -> None:
        """A project without CHANNEL_LAYERS (``manage.py check``: E004) can carry no change
        and no push: the client and the server's log say so, plainly."""
        message = (
            "the server has no channel layer: its CHANNEL_LAYERS setting is missing "
            "(manage.py check: changeflow_channels.E004)"
        )
        logger.error("websocket refused: %s", message)
        self.closing = True
        await self.accept()
        await self.send(text_data=encode(error_frame(UNAVAILABLE, message)))
        await self.close(code=CLOSE_NO_LAYER)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.events = LocalEvents(receive)
        try:
            await super().__call__(scope, self.events, send)
        finally:
            # However the consumer ends (a clean disconnect, an error, a cancel):
            # its tasks and timers stop, its gauges come down, its groups are left.
            self.events.close()
            await self._clean_up()

    async def disconnect(self, code: int) -> None:
        await self._clean_up()

    async def _clean_up(self) -> None:
        if getattr(self, "cleaned_up", False):
            return
        self.cleaned_up = True
        if hasattr(self, "writer"):
            metrics.WEBSOCKET_CLIENTS.dec()
            self.writer.cancel()
        for key in list(getattr(self, "subscriptions", {})):
            await self._leave(key)

    @property
    def user(self) -> Any:
        return self.scope.get("user")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if getattr(self, "closing", False):
            return  # closed for abuse or slowness: nothing more is handled
        request_id = None
        try:
            check_frame_size(text_data, bytes_data, self.settings.max_frame_bytes)
            frame = parse_frame(text_data)
            request_id = frame.get("id")
            action = frame["action"]
            if action == "ack":
                self._ack(frame["frames"], request_id)
            elif action == "subscribe":
                await self._subscribe(frame)
            elif action == "unsubscribe":
                await self._unsubscribe(frame)
            else:
                await self._push(frame)
        except FrameError as error:
            # A subscribe told to come back later (``retry_after``) is no abuse: a client
            # resubscribing everything after a reconnect gets many at once.
            if not isinstance(error, RateLimited) and not self.error_bucket.take():
                # Errors faster than any honest client makes them: an abuser.
                logger.warning("closing a websocket that keeps sending bad frames")
                self.closing = True
                await self.close(code=CLOSE_ABUSE)
                return
            refusal = error_frame(error.code, error.message, error.request_id)
            if isinstance(error, RateLimited):
                refusal["retry_after"] = error.retry_after
            if isinstance(error, FrameTooLarge):
                refusal["size"] = error.size  # not read, so no id: the client's clue
            await self.send_frame(refusal)
        except Exception:  # one frame's boundary: logged, answered with a code
            logger.exception("websocket frame failed")
            await self.send_frame(
                error_frame(UNAVAILABLE, "the server could not handle this frame", request_id)
            )

    def _ack(self, count: int, request_id: Any) -> None:
        """The client has read ``count`` frames: the window moves on."""
        try:
            if self.window.acked(count):
                self.window_open.set()
        except AckError as error:
            raise FrameError(BAD_REQUEST, str(error), request_id) from None

    async def send_frame(self, frame: dict[str, Any] | str, read_at: float | None = None) -> None:
        """Queue a frame (a dict, or its JSON text) for the client."""
        if getattr(self, "closing", False):
            return
        text = frame if isinstance(frame, str) else encode(frame)
        bound = self.settings.max_sent_frame_bytes
        if not fits(text, bound):
            # Delivery splits what may be large; anything else this large is a bug. The
            # client must not miss it silently: it resumes on a new connection.
            logger.error("a frame of %d bytes exceeds %d; closing", byte_size(text), bound)
            await self._close_for(CLOSE_SEND_FAILED)
            return
        # A batch frame may carry many changes: bound the bytes waiting, not only the frames.
        queued = getattr(self, "queued_bytes", 0) + len(text)
        if self.outgoing.full() or queued > self.settings.send_queue_bytes:
            if not getattr(self, "too_slow", False):
                self.too_slow = True
                self.closing = True
                logger.warning(
                    "closing a websocket too slow to read (%d frames, %d bytes waiting)",
                    self.outgoing.qsize(),
                    queued - len(text),
                )
                await self.close(code=CLOSE_TOO_SLOW)
            return
        self.queued_bytes = queued
        self.outgoing.put_nowait((text, read_at))

    async def _close_for(self, code: int) -> None:
        if getattr(self, "closing", False):
            return
        self.closing = True
        await self.close(code=code)

    async def _write_forever(self) -> None:
        """Send the queued frames in order, within the client's window. A send that
        fails closes the connection (CLOSE_SEND_FAILED): the client missed a frame
        and must resume, never go on without it."""
        try:
            while True:
                text, read_at = await self.outgoing.get()
                size = byte_size(text)
                while not self.window.may_send(size):  # the client has not read enough
                    self.window_open.clear()
                    await self.window_open.wait()
                self.queued_bytes -= len(text)
                if getattr(self, "closing", False):
                    return  # closed: what is still queued is dropped
                self.window.sent(size)
                await self.send(text_data=text)
                if read_at is not None:
                    metrics.websocket_sent(read_at)
        except asyncio.CancelledError:
            raise
        except Exception:  # the writer task's boundary
            logger.exception(
                "sending a frame failed; closing the websocket (code %d)", CLOSE_SEND_FAILED
            )
            try:
                await self._close_for(CLOSE_SEND_FAILED)
            except Exception:  # the server is gone too
                logger.exception("closing the websocket failed")

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        stream, request_id = frame["stream"], frame.get("id")
        name = check_sub_name(frame.get("sub"), request_id)
        try:
            since = parse_client_since(frame.get("since"))
            row_filter = parse_filter(frame.get("filter"))
        except (SyncError, FilterError) as error:
            raise FrameError(BAD_REQUEST, str(error), request_id) from None
        # Every subscribe costs (again to the same stream too); a snapshot or resume more,
        # and one at a time per stream (another subscription's sync under way: later).
        key = (stream, name)
        wants_sync = since is not None or bool(frame.get("snapshot"))
        busy = any(s.key != key and s.pending is not None for s in self.subscriptions_of(stream))
        self.subscribe_limits.spend(sync=wants_sync, busy=busy, request_id=request_id)
        if not await ask(self.policy.can_subscribe, self.user, stream):
            raise FrameError(FORBIDDEN, f"you may not subscribe to {stream}", request_id)
        previous = self.subscriptions.get(key)
        if previous is not None:
            await self._leave(key)  # subscribing again starts the subscription afresh
        elif len(self.subscriptions) >= self.settings.max_subscriptions:
            raise FrameError(
                RATE_LIMITED,
                f"at most {self.settings.max_subscriptions} subscriptions per connection",
                request_id,
            )
        if not self.subscriptions_of(stream):
            try:
                await self.channel_layer.group_add(stream, self.channel_name)
            except LAYER_ERRORS as error:
                raise FrameError(
                    UNAVAILABLE, f"channel layer unavailable: {error!r}", request_id
                ) from None
        database, table = parse_stream(stream)
        # Under a row rule: its own numbers, and the real position from a cursor.
        resume = resume_from(
            since,
            stream,
            numbered=has_row_rule(self.policy),
            cursors=site_cursors(),
            previous=previous.numbering if previous is not None else None,
        )
        sub = Subscription(
            stream,
            database,
            table,
            name=name,
            filter=row_filter,
            snapshot=bool(frame.get("snapshot")),
            sync_timeout=self.settings.sync_timeout,
            numbering=resume.numbering,
        )
        self.subscriptions[key] = sub
        metrics.SUBSCRIPTIONS.inc()
        await self.send_frame(sub.tag({"event": "subscribed", "stream": stream, "id": request_id}))
        frames: Frames = []  # a resync, when asking fails (``perform``)
        await self.perform(sub, sub.start(resume.since, lost=resume.lost), frames)  # a sync, if any
        for text, read_at in frames:
            await self.send_frame(text, read_at)

    async def _unsubscribe(self, frame: dict[str, Any]) -> None:
        stream, request_id = frame["stream"], frame.get("id")
        name = check_sub_name(frame.get("sub"), request_id)
        key = (stream, name)
        if key not in self.subscriptions:
            raise FrameError(
                NOT_FOUND,
                f"not subscribed to {stream}" + (f" as {name!r}" if name is not None else ""),
                request_id,
            )
        await self._leave(key)
        frame = {"event": "unsubscribed", "stream": stream, "id": request_id}
        if name is not None:
            frame["sub"] = name
        await self.send_frame(frame)

    async def _leave(self, key: tuple[str, Any]) -> None:
        sub = self.subscriptions.pop(key, None)
        if sub is not None:
            metrics.SUBSCRIPTIONS.dec()
        stream = key[0]
        if self.subscriptions_of(stream):
            return  # another subscription still needs the group
        try:
            await group_discard_retrying(self.channel_layer, stream, self.channel_name)
        except LAYER_ERRORS as error:
            logger.warning("group_discard(%s) failed: %r", stream, error)
