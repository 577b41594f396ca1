"""A bare Channels consumer: sends as many text frames as asked, as fast as Daphne takes them.

It sets ``ceiling_ws_frames_per_s``: what Channels and Daphne can deliver with
no product code in the way. The frames look like the product's change frames.
"""

from __future__ import annotations

import json
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer


def sample_frame(seq: int) -> str:
    """A change frame of the usual size."""
    return json.dumps(
        {
            "event": "change",
            "stream": "bench.bare",
            "type": "add",
            "old_val": None,
            "new_val": {"id": f"{seq:036d}", "n": seq, "t": 0.0},
            "epoch": "0" * 32,
            "seq": seq,
        },
        separators=(",", ":"),
    )


class BareConsumer(AsyncWebsocketConsumer):
    """``{"count": N}`` from the client: N frames back, then ``{"event": "done"}``."""

    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        count = int(json.loads(text_data or "{}").get("count", 0))
        for seq in range(1, count + 1):
            await self.send(text_data=sample_frame(seq))
        await self.send(text_data='{"event":"done"}')
