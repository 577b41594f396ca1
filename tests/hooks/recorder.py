"""Hooks report what they saw on channels the tests read (``hooks.sync.<db>``, ``hooks.async.<db>``)."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def report(database: str, table: str, change: dict) -> dict:
    return {"type": "hook.seen", "database": database, "table": table, "change": change}


def send_sync(channel: str, message: dict) -> None:
    async_to_sync(get_channel_layer().send)(channel, message)
