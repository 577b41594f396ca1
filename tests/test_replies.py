"""The worker's answers while the channel layer is down: sent once it is back (real Redis)."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from changeflow_channels.redis_layer import REDIS_ERRORS, RedisChannelLayer
from changeflow_channels.testing.processes import RedisServer
from changeflow_channels.worker import push_batches, replies
from changeflow_channels.worker.push_batches import PushPipeline
from changeflow_channels.worker.push_plan import Received
from changeflow_channels.worker.replies import send_reply


def layer_on(server: RedisServer) -> RedisChannelLayer:
    return RedisChannelLayer(hosts=[{"address": server.url, "socket_timeout": None}])


async def test_an_answer_is_sent_once_redis_is_back():
    with RedisServer.running() as server:
        worker, sender = layer_on(server), layer_on(server)
        try:
            await worker.send("warm", {"type": "x"})  # a pooled connection Redis will drop
            await asyncio.to_thread(server.stop)
            sending = asyncio.ensure_future(send_reply(worker, "reply-1", {"type": "answer"}))
            await asyncio.sleep(0.5)  # a few attempts fail meanwhile
            assert not sending.done()
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(sending, 15)
            deadline = time.monotonic() + 15
            while True:  # the sender's own pool reconnects too
                try:
                    answer = await asyncio.wait_for(sender.receive("reply-1"), 5)
                    break
                except REDIS_ERRORS:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.1)
            assert answer == {"type": "answer"}
        finally:
            await worker.close_pools()
            await sender.close_pools()


async def test_answers_give_up_together_when_redis_stays_down(caplog):
    with RedisServer.running() as server:
        worker = layer_on(server)
        await asyncio.to_thread(server.stop)
        try:
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger=replies.__name__):
                await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            send_reply(worker, f"r{n}", {"type": "a"}, patience=1.0)
                            for n in range(5)
                        )
                    ),
                    10,
                )
                # One outage, one deadline: a later answer in it gives up at once.
                later = time.monotonic()
                await send_reply(worker, "r-late", {"type": "a"}, patience=1.0)
            assert time.monotonic() - started < 4.0
            assert time.monotonic() - later < 0.5
            gave_up = [r for r in caplog.records if "stayed unavailable" in r.getMessage()]
            assert len(gave_up) == 6
        finally:
            await worker.close_pools()
            replies._outage.since = None


async def test_a_full_reply_channel_gives_up_its_round_of_answers_at_once(caplog):
    """A sender gone with many answers due: its channel stays full. Each answer
    would wait about 5 s there, and the next round's answers wait for this round:
    the first answer that cannot be sent gives up the rest of that channel's."""
    with RedisServer.running() as server:
        worker = layer_on(server)
        worker.capacity = 2
        try:
            for n in range(2):  # nobody reads it any more
                await worker.send("gone!x", {"type": "old", "n": n})
            pipeline = PushPipeline(None, partial(send_reply, worker), None)
            items = [
                Received({"reply_channel": "gone!x"}, result={"type": "a", "n": n})
                for n in range(20)
            ]
            alive = await worker.new_channel()
            items.append(Received({"reply_channel": alive}, result={"type": "a", "n": 20}))
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger=push_batches.__name__):
                await asyncio.wait_for(pipeline._answer(items), 30)
            assert time.monotonic() - started < 10  # one answer's attempts, not twenty
            assert await asyncio.wait_for(worker.receive(alive), 5) == {"type": "a", "n": 20}
            assert any("19 more answer(s)" in r.getMessage() for r in caplog.records)
        finally:
            await worker.close_pools()
