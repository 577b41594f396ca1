"""A worker whose lease is lost while the channel layer is down (a Redis failover)
sends nothing more of the table once the layer is back (issue 18): another worker
follows the table by then, and a late epoch message of the old one would move the
subscribers back to an epoch that has no changes (they would drop the new holder's
changes as those of an epoch left)."""

from __future__ import annotations

import asyncio

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

from changeflow_channels.changes import epoch_message
from changeflow_channels.worker.hooks import HookRunner
from changeflow_channels.worker.publish import Delivery


class FailingOnce(InMemoryChannelLayer):
    """``group_send`` fails once (the layer down); the lease is lost before the retry."""

    def __init__(self, allowed: dict[str, bool]) -> None:
        super().__init__(capacity=1000)
        self.allowed = allowed
        self.failed = False

    async def group_send(self, group: str, message: dict) -> None:
        if not self.failed:
            self.failed = True

            def lose() -> None:
                self.allowed[group] = False

            # The lease expires during the outage, while the sender waits to try again
            # (its first wait is 0.1 s).
            asyncio.get_running_loop().call_later(0.05, lose)
            raise ChannelFull("the layer is down")
        await super().group_send(group, message)


async def test_an_epoch_held_up_by_the_layer_is_not_sent_once_the_lease_is_lost():
    allowed = {"d.t": True}
    layer = FailingOnce(allowed)
    member = await layer.new_channel()
    await layer.group_add("d.t", member)
    delivery = Delivery(
        layer, HookRunner([], 1.0), verbose=False, may_send=lambda stream: allowed[stream]
    )
    await delivery(epoch_message("d", "t", "old-holders-epoch", 0, since_creation=False))
    await asyncio.wait_for(delivery.drain(), 5)
    assert layer.failed
    received = []
    while True:
        try:
            received.append(await asyncio.wait_for(layer.receive(member), 0.2))
        except asyncio.TimeoutError:
            break
    assert received == []
