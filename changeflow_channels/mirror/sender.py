"""Sending model pushes without ever failing a save: send now, or queue and retry.

``submit`` sends a push to the worker's channel at once. When that fails (the
channel layer is down, full, or slower than ``SEND_TIMEOUT``), the push goes
into an in-process queue that a daemon thread drains, oldest first, retrying
with backoff (``FIRST_DELAY`` doubling up to ``MAX_DELAY`` seconds). While
pushes wait, new ones queue behind them, so one object's pushes keep their
order. The queue holds at most ``MAX_QUEUED`` pushes; beyond that a push is
dropped with an error in the log (``manage.py changeflow sync`` repairs the
mirror). At interpreter exit, queued pushes get ``EXIT_FLUSH`` seconds more.

Nothing here raises into the caller: failures are logged to the
``changeflow_channels`` logger.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from ..conf import get_settings
from ..redis_layer import LAYER_ERRORS

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 5.0
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
MAX_QUEUED = 10_000
EXIT_FLUSH = 5.0

Sender = Callable[[dict[str, Any]], Awaitable[None]]


async def send_to_worker(message: dict[str, Any]) -> None:
    """Send one push to the worker's channel (``CHANGEFLOW_CHANNEL``)."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured (CHANNEL_LAYERS)")
    await asyncio.wait_for(layer.send(get_settings().channel, message), SEND_TIMEOUT)


def _describe(message: dict[str, Any]) -> str:
    key = message.get("key")
    if key is None and isinstance(message.get("data"), dict):
        key = message["data"].get("id")
    return (
        f"{message.get('op', 'insert')} {message.get('database')}.{message.get('table')} id={key!r}"
    )


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RetryQueue:
    """Pushes that could not be sent yet, and the daemon thread that retries them."""

    def __init__(
        self,
        send: Sender = send_to_worker,
        *,
        max_size: int = MAX_QUEUED,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self._send = send
        self.max_size = max_size
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._items: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._wake = False
        self._queued_since = 0.0
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def submit(self, message: dict[str, Any]) -> None:
        """Send ``message`` now, or queue it for the retry thread if the channel layer
        fails. Anything else (no layer configured) is raised, to ``on_commit(robust=True)``,
        which logs it."""
        with self._cond:
            if self._items:  # others wait: keep the order
                self._append(message)
                return
        try:
            async_to_sync(self._send)(message)
        except LAYER_ERRORS as error:
            logger.warning(
                "changeflow: could not send the push (%s): %s; queued for retry",
                _describe(message),
                _error_text(error),
            )
            with self._cond:
                self._append(message)

    def _append(self, message: dict[str, Any]) -> None:
        """Queue ``message`` (the condition is held); start the thread if needed."""
        if len(self._items) >= self.max_size:
            self.dropped += 1
            logger.error(
                "changeflow: the retry queue is full (%d pushes waiting); dropped the push (%s). "
                "Run `manage.py changeflow sync` once the channel layer is back.",
                len(self._items),
                _describe(message),
            )
            return
        if not self._items:
            self._queued_since = time.monotonic()
        self._items.append(message)
        self._cond.notify_all()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="changeflow-model-push-retry", daemon=True
            )
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Retry at once and wait until the queue is empty; False if it is not within ``timeout``."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._items, timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()  # one loop for the thread's life: its connections stay open
        try:
            self._drain(loop)
        finally:
            loop.close()

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        delay = self.first_delay
        attempts = delivered = 0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._items))
                message = self._items[0]
            try:
                loop.run_until_complete(self._send(message))
            except Exception as error:  # the retry thread's loop: it must go on
                attempts += 1
                logger.warning(
                    "changeflow: retry %d of a queued push failed (%s); %d waiting, next try in %.1f s",
                    attempts,
                    _error_text(error),
                    len(self),
                    delay,
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._wake, delay)
                    self._wake = False
                delay = min(delay * 2, self.max_delay)
                continue
            delivered += 1
            delay = self.first_delay
            with self._cond:
                self._items.popleft()
                if not self._items:
                    logger.warning(
                        "changeflow: %d queued pushes delivered, %.1f s after the first failure",
                        delivered,
                        time.monotonic() - self._queued_since,
                    )
                    delivered, attempts = 0, 0
                    self._cond.notify_all()  # flush() waiters

    def flush_at_exit(self) -> None:
        """Give queued pushes a last chance at interpreter exit; say how many are lost."""
        if len(self) and not self.flush(EXIT_FLUSH):
            logger.error(
                "changeflow: %d model pushes were never sent (the channel layer stayed unreachable). "
                "Run `manage.py changeflow sync` to repair the mirror.",
                len(self),
            )


retry_queue = RetryQueue()
atexit.register(retry_queue.flush_at_exit)
