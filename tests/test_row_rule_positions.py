"""The consumer's numbering under a row rule (issue 15, item 6), in-process on the
in-memory channel layer, the test playing the worker: hidden changes take no
number, a change too large to send keeps its number and cursor, and subscribing
again on the connection goes on from the numbers it had."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import override_settings

from changeflow_channels.consumers import ChangeflowConsumer
from changeflow_channels.web.positions import Cursor, site_cursors

pytestmark = pytest.mark.django_db


class MineOnly:
    """Anyone may subscribe; documents whose ``owner`` is not "me" are hidden."""

    def can_subscribe(self, user: Any, stream: str) -> bool:
        return True

    def can_push(self, user: Any, stream: str, op: str) -> bool:
        return False

    async def filter_change(self, user: Any, stream: str, change: dict[str, Any]) -> Any:
        def mine(doc: Any) -> Any:
            return doc if doc is not None and doc.get("owner") == "me" else None

        return {**change, "old_val": mine(change["old_val"]), "new_val": mine(change["new_val"])}


SETTINGS = {
    "CHANNEL_LAYERS": {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
    "CHANGEFLOW_PERMISSIONS": "tests.test_row_rule_positions.MineOnly",
    "CHANGEFLOW_SYNC_TIMEOUT": 600.0,
    "CHANGEFLOW_RECHECK_EVERY": 3600.0,
    "CHANGEFLOW_MAX_SENT_FRAME_BYTES": 50_000,
}


def change(seq: int, owner: str, pad: int = 0) -> dict[str, Any]:
    doc = {"id": seq, "owner": owner, "pad": "x" * pad}
    return {
        "type": "changeflow.change",
        "database": "db",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": doc},
        "epoch": "e",
        "seq": seq,
    }


async def frames_until_quiet(client: WebsocketCommunicator) -> list[dict[str, Any]]:
    frames = []
    while not await client.receive_nothing(0.3):
        frame = json.loads((await client.receive_output(timeout=5))["text"])
        frames.extend(frame.get("events", [frame]))
    return frames


async def test_hidden_changes_take_no_numbers_and_a_too_large_change_keeps_its_own():
    with override_settings(**SETTINGS):
        layer = get_channel_layer()
        client = WebsocketCommunicator(ChangeflowConsumer.as_asgi(), "/ws/changeflow/")
        assert (await client.connect())[0]
        await client.send_json_to({"action": "subscribe", "stream": "db.t", "id": 1})
        assert (await client.receive_json_from())["event"] == "subscribed"
        await layer.group_send("db.t", change(1, "me"))
        for seq in range(2, 11):
            await layer.group_send("db.t", change(seq, "them"))
        await layer.group_send("db.t", change(11, "me", pad=60_000))  # too large to send
        await layer.group_send("db.t", change(12, "me"))
        got = await frames_until_quiet(client)
        assert [(f["event"], f.get("code"), f["seq"]) for f in got] == [
            ("change", None, 1),
            ("error", "too_large", 2),
            ("change", None, 3),
        ]
        cursors = site_cursors()
        assert [cursors.open("db.t", f["cursor"]) for f in got] == [
            Cursor("e", 1, 1),
            Cursor("e", 11, 2),
            Cursor("e", 12, 3),
        ]
        assert "change 11" not in got[1]["message"]  # the real seq, nowhere

        # Subscribing again (for a snapshot) goes on from the numbers it had.
        await client.send_json_to({"action": "subscribe", "stream": "db.t", "snapshot": True})
        assert (await client.receive_json_from())["event"] == "subscribed"
        request = await layer.receive("changeflow.sync")
        documents = [{"id": 1, "owner": "me"}, {"id": 2, "owner": "them"}]
        answer = {
            "type": "changeflow.sync.result",
            "id": request["id"],
            "database": "db",
            "table": "t",
            "epoch": "e",
            "seq": 12,
            "changes": None,
            "resync": None,
            "snapshot": {"documents": documents, "truncated": False},
        }
        await layer.send(request["reply_channel"], answer)
        (snapshot,) = await frames_until_quiet(client)
        await client.disconnect()
    assert (snapshot["event"], snapshot["seq"], snapshot["documents"]) == (
        "snapshot",
        3,
        [{"id": 1, "owner": "me"}],
    )
    assert cursors.open("db.t", snapshot["cursor"]) == Cursor("e", 12, 3)
