"""What one subscriber sees: its row rule and filter applied to changes and
snapshots, and the frames made of them.

Under a row rule, a frame carries the subscription's own numbers and a resume
cursor, never the table's ``seq`` (``web/positions.py``): it must not tell how
many changes the client did not see. Used by ``DeliveryMixin`` (web/delivery.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..permissions import RowRuleError, apply_row_rule
from .actions import Snapshot
from .filters import seen_through
from .positions import site_cursors, stamp
from .protocol import (
    UNAVAILABLE,
    byte_size,
    change_frame,
    encode,
    error_frame,
    fits,
    snapshot_texts_async,
    too_large_frame,
)
from .subscriptions import Subscription

logger = logging.getLogger(__name__)

# A change message's frame, encoded by the first consumer of this process that sends it.
ENCODED = "_changeflow_frame"

# Frames on their way to the client: (JSON text, read_at of a live change).
Frames = list[tuple[str, float | None]]

_ENDED = object()  # a row rule failed: the subscription has ended


def _everything(document: Any) -> bool:
    return True


class SeenMixin:
    """Row rules, filters and frames of ``ChangeflowConsumer``'s subscriptions.
    Needs ``settings``, ``policy``, ``user`` and ``_leave``."""

    settings: Any
    policy: Any
    user: Any
    _leave: Callable[[tuple[str, Any]], Awaitable[None]]  # ends a subscription

    async def _row_rule(self, sub: Subscription, change: dict[str, Any], frames: Frames) -> Any:
        """The change as the policy's row rule and the subscription's filter let
        this client see it: None when hidden, ``_ENDED`` when the rule failed."""
        try:
            seen = await apply_row_rule(self.policy, self.user, sub.stream, change)
        except RowRuleError as error:
            await self._row_rule_failed(sub, error, frames)
            return _ENDED
        if seen is None:
            return None
        return seen_through(seen, sub.filter.matches if sub.filter else _everything)

    def _change_text(
        self, sub: Subscription, message: dict[str, Any], change: dict[str, Any], live: bool
    ) -> tuple[str, float | None]:
        """A change frame (as ``sub`` sees ``change``): its text, and the time its
        message was read off the feed (replayed, not ``live``: out of the send lag
        metric). A frame larger than ``CHANGEFLOW_MAX_SENT_FRAME_BYTES`` becomes a
        ``too_large`` error frame with the change's position (under a row rule: its
        number and cursor, as the change's frame would have had)."""
        read_at = message.get("read_at") if live else None
        frame = None
        if sub.numbering is None and sub.name is None and change is message["change"]:
            # The same text for every client of this process: encoded once.
            text = message.get(ENCODED)
            if text is None:
                text = message[ENCODED] = encode(change_frame(message))
        else:
            frame = self._change_frame(sub, message, change)
            text = encode(sub.tag(frame))
        bound = self.settings.max_sent_frame_bytes
        if fits(text, bound):
            return text, read_at
        logger.warning("change %s of %s too large to send to a client", message["seq"], sub.stream)
        if frame is None:
            frame = change_frame(message)
        size = byte_size(text)
        numbered = "cursor" in frame
        what = f"change ({size} bytes)" if numbered else f"change {frame['seq']} ({size} bytes)"
        refusal = too_large_frame(sub.stream, what, bound, frame["epoch"], frame["seq"])
        if numbered:
            refusal["cursor"] = frame["cursor"]
        return encode(sub.tag(refusal)), None

    @staticmethod
    def _change_frame(
        sub: Subscription, message: dict[str, Any], change: dict[str, Any]
    ) -> dict[str, Any]:
        """The change frame of ``message`` as ``sub`` sees it (``change``), untagged.
        Under a row rule with the subscription's own number and a cursor."""
        seen = message if change is message["change"] else {**message, "change": change}
        frame = change_frame(seen)
        if sub.numbering is not None:  # its own numbers, never the table's seq
            epoch, seq = message["epoch"], message["seq"]
            stamp(frame, sub.numbering, site_cursors(), sub.stream, epoch, seq, advance=True)
        return frame

    async def _send_snapshot(self, sub: Subscription, snapshot: Snapshot, frames: Frames) -> bool:
        """The snapshot as this subscription sees it (False: its row rule failed)."""
        visible = []
        try:
            for document in snapshot.documents:
                initial = {"type": "initial", "old_val": None, "new_val": document}
                change = await apply_row_rule(self.policy, self.user, sub.stream, initial)
                if change is None or change.get("new_val") is None:
                    continue
                if sub.filter is None or sub.filter.matches(change["new_val"]):
                    visible.append(change["new_val"])
        except RowRuleError as error:
            await self._row_rule_failed(sub, error, frames)
            return False
        frame = {
            "event": "snapshot",
            "stream": sub.stream,
            "documents": visible,
            "truncated": snapshot.truncated,
            "epoch": snapshot.epoch,
            "seq": snapshot.seq,
        }
        position = (snapshot.epoch, snapshot.seq)
        if sub.numbering is not None:
            stamp(frame, sub.numbering, site_cursors(), sub.stream, *position, advance=False)
        bound = self.settings.max_sent_frame_bytes
        texts, left_out = await snapshot_texts_async(sub.tag(frame), bound)  # parts when large
        frames.extend((text, None) for text in texts)
        if left_out:
            logger.warning("%d documents of %s too large to send to a client", left_out, sub.stream)
            what = f"{left_out} document(s) of the snapshot"
            refusal = too_large_frame(sub.stream, what, bound, frame["epoch"], frame["seq"])
            if "cursor" in frame:
                refusal["cursor"] = frame["cursor"]
            frames.append((encode(sub.tag(refusal)), None))
        return True

    async def _row_rule_failed(
        self, sub: Subscription, error: RowRuleError, frames: Frames
    ) -> None:
        """Nothing of the stream may be shown when the rule cannot say what: the
        subscription ends, and the client is told (after what it already got)."""
        logger.error("row rule failed on %s; ending the subscription: %s", sub.stream, error)
        await self._leave(sub.key)
        message = (
            f"your subscription to {sub.stream} has ended: the server could not check your rows"
        )
        frames.append((encode(sub.tag(error_frame(UNAVAILABLE, message))), None))
