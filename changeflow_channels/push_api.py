"""Sending pushes from any process: ``push_to_flow`` and ``apush_to_flow``."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from .conf import get_settings
from .pushes import PushError, build_push


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
    wait: bool = False,
    timeout: float = 30.0,
    channel_layer: Any = None,
) -> dict[str, Any] | None:
    """Validate and send a ``changeflow.push`` to the worker.

    Raises ``PushError`` for a bad push before anything is sent. With
    ``wait=True`` it waits for the worker's answer (on a fresh reply channel)
    and returns it, raising ``PushFailed`` if the worker refused the push and
    ``TimeoutError`` if no answer came within ``timeout`` seconds.
    """
    layer = channel_layer or get_channel_layer()
    if layer is None:
        raise PushError("no channel layer is configured (CHANNEL_LAYERS)")
    if wait and reply_channel is None:
        reply_channel = await layer.new_channel("changeflow-reply.")
    message = build_push(database, table, data, op=op, key=key, reply_channel=reply_channel, id=id)
    await layer.send(get_settings().channel, message)
    if not wait:
        return None
    result: dict[str, Any] = await asyncio.wait_for(layer.receive(reply_channel), timeout)
    if not result.get("ok"):
        raise PushFailed(result)
    return result


def push_to_flow(database: str, table: str, data: Any, **options: Any) -> dict[str, Any] | None:
    """Synchronous ``apush_to_flow``, for views, signals and scripts."""
    return async_to_sync(apush_to_flow)(database, table, data, **options)
