"""The consumer's permission re-check: every ``CHANGEFLOW_RECHECK_EVERY`` seconds
the user is loaded afresh and the policy asked again about each subscription.

- A subscription no longer allowed ends (``forbidden``).
- A token that expired or was revoked meanwhile ends the connection: an ``error``
  frame ``unauthorized``, then close code 4001 (expired) or 4002 (revoked).
- It fails closed: a re-check that raises (the user database or the policy's
  backend unreachable) is tried again, and once it has kept failing for
  ``CHANGEFLOW_RECHECK_GRACE`` seconds every subscription ends with ``unavailable``
  and the connection is closed with 4012; the client reconnects and resumes with
  ``since`` when the backend is back (``changeflow.js`` does so by itself).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..auth import TokenEnded, fresh_user
from ..permissions import ask
from .local_events import LocalEvents
from .protocol import FORBIDDEN, UNAVAILABLE, encode, error_frame
from .refusal import CLOSE_UNAVAILABLE, Refusal
from .subscriptions import Subscription

logger = logging.getLogger(__name__)

# The consumer's own event: re-check its subscriptions' permissions.
RECHECK = {"type": "changeflow.recheck"}
# While re-checks fail, they are tried at least this often (seconds).
RETRY_EVERY = 5.0
# How long an ending connection waits for its queued frames to go (seconds).
DRAIN_TIME = 2.0


class RecheckMixin:
    """Re-checks of ``ChangeflowConsumer`` (which provides ``scope``, ``policy``,
    ``settings``, ``events``, ``subscriptions``, ``user``, ``_leave``, ``send_frame``
    and ``close``)."""

    scope: dict[str, Any]
    policy: Any
    settings: Any
    events: LocalEvents
    subscriptions: dict[tuple[str, Any], Subscription]
    user: Any
    _leave: Callable[[tuple[str, Any]], Awaitable[None]]  # ends a subscription
    send_frame: Callable[..., Awaitable[None]]  # the consumer's: (frame, read_at=None)
    send: Callable[..., Awaitable[None]]  # the consumer's: sends at once, past the queue
    close: Callable[..., Awaitable[None]]

    async def changeflow_recheck(self, message: dict[str, Any]) -> None:
        """Subscriptions end within CHANGEFLOW_RECHECK_EVERY seconds of a logout, a lost
        permission or an ended token; within CHANGEFLOW_RECHECK_GRACE of a failing check."""
        if getattr(self, "closing", False):
            return
        delay = self.settings.recheck_every
        try:
            await self.recheck()
            self.recheck_failing_since: float | None = None
        except TokenEnded as ended:
            await self._end_connection(ended.refusal, ended_subscriptions=False)
            return
        except Exception as error:  # a timer's boundary (the policy and the user loader: user code)
            now = time.monotonic()
            since = getattr(self, "recheck_failing_since", None) or now
            self.recheck_failing_since = since
            left = self.settings.recheck_grace - (now - since)
            if left <= 0:
                logger.exception(
                    "permission re-check failed for %.1f s; ending the connection's "
                    "subscriptions (fails closed)",
                    now - since,
                )
                reason = "your permissions cannot be checked now: reconnect and resume later"
                await self._end_connection(Refusal(CLOSE_UNAVAILABLE, UNAVAILABLE, reason))
                return
            # One line per try (every connection tries while the backend is away); the
            # traceback comes with the end.
            logger.warning(
                "permission re-check failed (%r); keeping the subscriptions at most %.1f s more",
                error,
                left,
            )
            delay = max(0.1, min(delay, RETRY_EVERY, left))
        self.events.later(delay, RECHECK)

    async def recheck(self) -> None:
        self.scope["user"] = await fresh_user(self.scope)
        refresh = getattr(self.policy, "refresh", None)
        if callable(refresh):
            refresh()
        for key, sub in list(self.subscriptions.items()):
            if not await ask(self.policy.can_subscribe, self.user, sub.stream):
                await self._leave(key)
                message = (
                    f"your subscription to {sub.stream} has ended: logged out or permission revoked"
                )
                await self.send_frame(sub.tag(error_frame(FORBIDDEN, message)))

    async def _end_connection(self, refusal: Refusal, ended_subscriptions: bool = True) -> None:
        """End every subscription (an ``error`` frame each, when ``ended_subscriptions``),
        then the connection: one ``error`` frame with the refusal's code, then its close
        code. The frames queued before go first when the client takes them within
        ``DRAIN_TIME``; what is left then is dropped, as with any close (the client
        resumes with ``since``)."""
        for key, sub in list(self.subscriptions.items()):
            await self._leave(key)
            if ended_subscriptions:
                frame = error_frame(refusal.error_code, refusal.message)
                await self.send_frame(sub.tag({**frame, "stream": sub.stream}))
        outgoing = getattr(self, "outgoing", None)
        deadline = time.monotonic() + DRAIN_TIME
        # The writer task (consumers.py) signals nothing when it has emptied the queue.
        while outgoing is not None and not outgoing.empty() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        self.closing = True  # the writer sends nothing more
        await self.send(text_data=encode(error_frame(refusal.error_code, refusal.message)))
        await self.close(code=refusal.close_code, reason=refusal.message[:120])
