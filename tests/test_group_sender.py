"""The one-round-trip group_send against a real Redis: channels_redis's semantics
(members, process-local channels, capacity, expiry), the byte bound and the
backlog it reports; and Delivery's byte-bounded batches and waiting for a
consumer that is behind."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from changeflow_channels.worker import publish
from changeflow_channels.worker.group_sender import GroupSender, MessageTooLarge
from changeflow_channels.worker.hooks import HookRunner
from changeflow_channels.worker.publish import Delivery

RECEIVE_TIMEOUT = 5.0


@pytest.fixture
async def layer(redis_url: str) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "socket_timeout": None}],
        prefix=f"test-{uuid.uuid4().hex[:8]}",
    )
    yield layer
    await layer.flush()
    await layer.close_pools()


async def receive(layer: RedisChannelLayer, channel: str) -> dict:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_TIMEOUT)


async def nothing_waiting(layer: RedisChannelLayer, channel: str) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), 0.2)
    except asyncio.TimeoutError:
        return True
    return False


def change(seq: int, size: int = 10) -> dict:
    return {
        "type": "changeflow.change",
        "database": "d",
        "table": "t",
        "change": {"type": "add", "old_val": None, "new_val": {"id": seq, "x": "y" * size}},
        "epoch": "e",
        "seq": seq,
    }


async def test_members_as_channels_redis_sees_them(layer: RedisChannelLayer) -> None:
    sender = GroupSender(layer)
    assert sender.fast
    local_a, local_b = await layer.new_channel(), await layer.new_channel()  # one Redis key
    plain = "plain-channel"
    for channel in (local_a, local_b, plain):
        await layer.group_add("g", channel)
    await sender.send("g", {"type": "m", "n": 1})  # members unknown yet: learnt, then sent
    await sender.send("g", {"type": "m", "n": 2})  # the members known: one round trip
    for channel in (local_a, local_b, plain):
        assert [(await receive(layer, channel))["n"] for _ in range(2)] == [1, 2]
    await layer.group_discard("g", plain)
    newcomer = await layer.new_channel()
    await layer.group_add("g", newcomer)
    await sender.send("g", {"type": "m", "n": 3})
    for channel in (local_a, local_b, newcomer):
        assert (await receive(layer, channel))["n"] == 3
    assert await nothing_waiting(layer, plain)


async def test_an_empty_group_is_sent_nothing(layer: RedisChannelLayer) -> None:
    sent = await GroupSender(layer).send("nobody", {"type": "m"}, max_bytes=10)
    assert sent.size == 0 and sent.backlog == 0


async def test_capacity_and_backlog(layer: RedisChannelLayer) -> None:
    layer.capacity = 5
    sender = GroupSender(layer)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    sent = [await sender.send("g", {"type": "m", "n": n}) for n in range(7)]
    assert [s.backlog for s in sent] == [0, 1, 2, 3, 4, 5, 5]  # capacity 5: the last two dropped
    assert [s.over for s in sent] == [0, 0, 0, 0, 0, 1, 1]
    assert [(await receive(layer, channel))["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
    assert await nothing_waiting(layer, channel)


async def test_a_message_over_the_bound_is_not_sent(layer: RedisChannelLayer) -> None:
    sender = GroupSender(layer)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    sent = await sender.send("g", {"type": "m", "data": "x" * 100}, max_bytes=1000)
    assert 100 < sent.size < 1000
    with pytest.raises(MessageTooLarge) as error:
        await sender.send("g", {"type": "m", "data": "x" * 2000}, max_bytes=1000)
    assert error.value.size > 2000
    assert (await receive(layer, channel))["data"] == "x" * 100
    assert await nothing_waiting(layer, channel)


async def test_other_layers_get_their_own_group_send() -> None:
    layer = InMemoryChannelLayer()
    sender = GroupSender(layer)
    assert not sender.fast
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    with pytest.raises(MessageTooLarge):
        await sender.send("g", {"type": "m", "data": "x" * 2000}, max_bytes=1000)
    sent = await sender.send("g", {"type": "m", "data": "x"}, max_bytes=1000)
    assert sent.size > 0
    assert (await layer.receive(channel))["data"] == "x"


async def test_batches_stay_within_the_byte_bound(layer: RedisChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.group_add("d.t", channel)
    delivery = Delivery(
        layer, HookRunner([], 1.0), verbose=False, batch_size=1000, batch_bytes=2000
    )
    # ~100 bytes each, one of ~5,000 among them: sent alone although over the bound.
    for seq in range(1, 61):
        await delivery(change(seq, 5000 if seq == 30 else 10))
    await delivery.drain()
    seqs, sizes = [], []
    while len(seqs) < 60:
        message = await receive(layer, channel)
        batch = message.get("changes", [message])
        seqs.extend(c["seq"] for c in batch)
        sizes.append(len(layer.serialize(message)))
        if any(c["seq"] == 30 for c in batch):
            assert len(batch) == 1
        else:
            assert sizes[-1] <= 2000 + 100  # __asgi_channel__ and the prefix
    assert seqs == list(range(1, 61))
    assert len(sizes) < 60  # batches nonetheless


async def test_a_consumer_behind_gets_fuller_batches(
    layer: RedisChannelLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publish, "BEHIND_WAIT", 0.1)  # 3 waiting: up to 0.3 s
    monkeypatch.setattr(publish, "BEHIND_WAIT_MAX", 0.5)
    channel = await layer.new_channel()
    await layer.group_add("d.t", channel)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False, batch_size=4)
    for seq in range(1, 4):  # alone each; the consumer reads nothing
        await delivery(change(seq))
        await delivery.drain()
    # 4 goes at once (a lone change) and finds 3 waiting: 5 to 8, trickling in,
    # wait for one another.
    for seq in range(4, 9):
        await delivery(change(seq))
        await asyncio.sleep(0.01)
    await delivery.drain()
    received = [await receive(layer, channel) for _ in range(5)]
    assert [m["seq"] for m in received[:4]] == [1, 2, 3, 4]
    assert [c["seq"] for c in received[4]["changes"]] == [5, 6, 7, 8]


async def test_a_consumer_keeping_up_gets_each_change_at_once(layer: RedisChannelLayer) -> None:
    channel = await layer.new_channel()
    await layer.group_add("d.t", channel)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False)
    for seq in range(1, 6):
        await delivery(change(seq))
        assert (await receive(layer, channel))["seq"] == seq
    await delivery.drain()


async def test_changes_a_full_channel_dropped_are_announced_again_once_it_has_room(
    layer: RedisChannelLayer,
) -> None:
    """A member channel found full loses the change; on a quiet table its consumer
    would never notice. The stream's position is announced again (an epoch
    message with ``again``) until every channel had room for it."""
    layer.capacity = 2
    channel = await layer.new_channel()
    await layer.group_add("d.t", channel)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False)
    try:
        for seq in (1, 2, 3):  # one at a time: the third finds the channel full
            await delivery(change(seq))
            await delivery.drain()
        assert [(await receive(layer, channel))["seq"] for _ in range(2)] == [1, 2]
        again = await receive(layer, channel)  # the channel has room again
        assert again["type"] == "changeflow.epoch" and again["again"] is True
        assert (again["epoch"], again["seq"]) == ("e", 3)
        assert await nothing_waiting(layer, channel)  # every channel had room: no more
    finally:
        delivery.close()


async def test_a_table_gone_is_not_announced_again(layer: RedisChannelLayer) -> None:
    layer.capacity = 1
    channel = await layer.new_channel()
    await layer.group_add("d.t", channel)
    delivery = Delivery(layer, HookRunner([], 1.0), verbose=False)
    try:
        for seq in (1, 2):  # the second finds the channel full: an announcement is due
            await delivery(change(seq))
            await delivery.drain()
        delivery.forget("d.t")  # the table was dropped
        assert (await receive(layer, channel))["seq"] == 1
        assert await nothing_waiting(layer, channel)
        await asyncio.sleep(publish.REANNOUNCE_DELAY * 2)  # when it would have come
        assert await nothing_waiting(layer, channel)
    finally:
        delivery.close()
