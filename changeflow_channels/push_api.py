"""Sending pushes from any process: ``push_to_flow`` and ``apush_to_flow``."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .conf import get_settings
from .push_coalescer import coalescer_for
from .push_replies import replies_for, tagged_id
from .pushes import UNAVAILABLE, PushError, build_push, check_json
from .redis_layer import LAYER_ERRORS

# Retries wait this long (with jitter), doubling up to RETRY_MAX_DELAY.
RETRY_DELAY = 0.5
RETRY_MAX_DELAY = 10.0
# No answer in time, or the channel layer down (or the worker's channel full).
RETRYABLE: tuple[type[Exception], ...] = (asyncio.TimeoutError, *LAYER_ERRORS)


class PushFailed(Exception):
    """The worker answered a waited-for push with an error."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("error", "push failed"))
        self.result = result


async def apush_to_flow(
    database: str,
    table: str,
    data: Any,
    *,
    op: str = "insert",
    key: Any = None,
    reply_channel: str | None = None,
    id: Any = None,
    idempotency_key: str | None = None,
    wait: bool = False,
    timeout: float = 30.0,
    retries: int = 0,
    channel_layer: Any = None,
) -> dict[str, Any] | None:
    """Validate and send a ``changeflow.push`` to the worker.

    Raises ``PushError`` for a bad push before anything is sent. With
    ``wait=True`` it waits for the worker's answer (on a fresh reply channel)
    and returns it, raising ``PushFailed`` if the worker refused the push and
    ``TimeoutError`` if no answer came within ``timeout`` seconds.

    ``idempotency_key``: pushes with one key into one table are written once
    (within ``CHANGEFLOW_IDEMPOTENCY_WINDOW``), each answered as the first.
    ``retries`` (with a key, and ``wait=True``): after a timeout, an
    ``unavailable`` answer or a channel layer that is down, the same push (same
    key, same reply channel) is sent again up to this many times, with backoff.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise PushError(f"retries must be an integer of at least 0, not {retries!r}")
    if retries and (idempotency_key is None or not wait):
        raise PushError(
            "retries needs an idempotency_key and wait=True: a push retried without a key "
            "may be written twice"
        )
    layer = channel_layer or get_channel_layer()
    if layer is None:
        raise PushError("no channel layer is configured (CHANNEL_LAYERS)")
    # Waited for without a reply channel of the caller's: answered on the process's
    # (push_replies.py), with the other pushes of the worker's round.
    shared = await replies_for(layer) if wait and reply_channel is None else None
    if shared is not None:
        check_json(id, "id")
        reply_channel = shared.channel
    number, answer = shared.expect() if shared is not None else (0, None)
    try:
        message = build_push(
            database,
            table,
            data,
            op=op,
            key=key,
            reply_channel=reply_channel,
            id=tagged_id(number, id) if shared is not None else id,
            idempotency_key=idempotency_key,
            batch_answers=shared is not None,
        )
        # Pushes of this process waiting together go as one message (push_coalescer.py).
        coalescer = coalescer_for(layer, get_settings().channel)
        if not wait:
            await coalescer.send(message)
            return None
        assert reply_channel is not None
        delay = RETRY_DELAY
        for attempt in range(retries + 1):
            last = attempt == retries
            try:
                await coalescer.send(message)
                result: dict[str, Any] = await asyncio.wait_for(
                    # Shielded: a retry still takes the first attempt's late answer.
                    asyncio.shield(answer) if answer is not None else layer.receive(reply_channel),
                    timeout,
                )
            except RETRYABLE:
                if last:
                    raise
            else:
                if result.get("ok"):
                    return result
                if last or result.get("code") != UNAVAILABLE:
                    raise PushFailed(result)
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, RETRY_MAX_DELAY)
    finally:
        if shared is not None:
            shared.forget(number)
    raise AssertionError("unreachable")  # the last attempt returned or raised


def push_to_flow(database: str, table: str, data: Any, **options: Any) -> dict[str, Any] | None:
    """Synchronous ``apush_to_flow``, for views, signals and scripts."""
    return async_to_sync(apush_to_flow)(database, table, data, **options)
