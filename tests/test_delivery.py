"""Delivery batching: alone a change goes out as itself; piled up, in batches, in order."""

from __future__ import annotations

import asyncio

from channels.layers import InMemoryChannelLayer

from changeflow_channels.changes import epoch_message
from changeflow_channels.worker.hooks import HookRunner
from changeflow_channels.worker.publish import Delivery


def message(seq: int) -> dict:
    return {
        "type": "changeflow.change",
        "database": "d",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": {"id": seq}},
        "epoch": "e",
        "seq": seq,
    }


async def test_a_lone_change_goes_out_alone_and_a_pile_in_ordered_batches():
    layer = InMemoryChannelLayer(capacity=1000)
    member = await layer.new_channel()
    await layer.group_add("d.t", member)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False, batch_size=100)
    await delivery(message(1))
    await delivery.drain()
    assert await layer.receive(member) == message(1)
    for seq in range(2, 252):  # handed over faster than any send completes
        await delivery(message(seq))
    await delivery.drain()
    received = [await layer.receive(member) for _ in range(3)]
    assert [m["type"] for m in received] == ["changeflow.batch"] * 3
    changes = [change for batch in received for change in batch["changes"]]
    assert [c["seq"] for c in changes] == list(range(2, 252))
    assert [len(batch["changes"]) for batch in received] == [100, 100, 50]


async def test_a_stream_it_may_no_longer_send_is_not_sent():
    layer = InMemoryChannelLayer(capacity=1000)
    member = await layer.new_channel()
    await layer.group_add("d.t", member)
    allowed = {"d.t": False}
    delivery = Delivery(
        layer, HookRunner([], 1.0), verbose=False, may_send=lambda stream: allowed[stream]
    )
    await delivery(message(1))
    await delivery.drain()
    allowed["d.t"] = True
    await delivery(message(2))
    await delivery.drain()
    assert await layer.receive(member) == message(2)
    assert delivery.pending("d.t") == 0


async def test_an_epoch_message_goes_alone_in_its_place_among_the_changes():
    layer = InMemoryChannelLayer(capacity=1000)
    member = await layer.new_channel()
    await layer.group_add("d.t", member)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False, batch_size=100)
    epoch = epoch_message("d", "t", "e", 3, since_creation=False)
    for item in (message(1), message(2), message(3), epoch, message(4), message(5)):
        await delivery(item)  # handed over faster than any send completes
    await delivery.drain()
    received = [await asyncio.wait_for(layer.receive(member), 5) for _ in range(3)]
    assert [c["seq"] for c in received[0]["changes"]] == [1, 2, 3]
    assert received[1] == epoch  # after the changes read before it, never in a batch
    assert [c["seq"] for c in received[2]["changes"]] == [4, 5]
