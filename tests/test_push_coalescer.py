"""The push coalescer (push_coalescer.py), with a fake send: no I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from changeflow_channels.push_coalescer import PushCoalescer, coalescer_for
from changeflow_channels.pushes import BATCH_TYPE, PushError, batch_pushes


class FakeSend:
    """Records what is sent; each send waits for ``release`` when ``hold`` is set."""

    def __init__(self, hold: bool = False, fail: Exception | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.hold = hold
        self.fail = fail
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        self.started.set()
        if self.hold:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail


def push(n: int) -> dict[str, Any]:
    return {"type": "changeflow.push", "database": "d", "table": "t", "data": {"n": n}}


async def test_a_lone_push_is_sent_at_once_as_itself() -> None:
    send = FakeSend()
    coalescer = PushCoalescer(send)
    await asyncio.wait_for(coalescer.send(push(1)), 1)
    assert send.sent == [push(1)]


async def test_pushes_waiting_during_a_send_go_together_in_order() -> None:
    send = FakeSend(hold=True)
    coalescer = PushCoalescer(send)
    first = asyncio.ensure_future(coalescer.send(push(0)))
    await asyncio.wait_for(send.started.wait(), 1)
    rest = [asyncio.ensure_future(coalescer.send(push(n))) for n in range(1, 6)]
    await asyncio.sleep(0)
    assert not first.done() and len(send.sent) == 1  # one send in flight at a time
    send.release.set()
    await asyncio.wait_for(asyncio.gather(first, *rest), 1)
    assert send.sent == [push(0), {"type": BATCH_TYPE, "pushes": [push(n) for n in range(1, 6)]}]
    assert batch_pushes(send.sent[1]) == [push(n) for n in range(1, 6)]


async def test_pushes_of_one_moment_go_in_one_message() -> None:
    send = FakeSend()
    coalescer = PushCoalescer(send)
    await asyncio.wait_for(asyncio.gather(*(coalescer.send(push(n)) for n in range(8))), 1)
    assert send.sent == [{"type": BATCH_TYPE, "pushes": [push(n) for n in range(8)]}]


async def test_batches_are_bounded_by_count_and_bytes() -> None:
    send = FakeSend()
    coalescer = PushCoalescer(send, max_pushes=3, max_bytes=100)
    await asyncio.gather(*(coalescer.send(push(n)) for n in range(7)))
    assert [len(m.get("pushes", [m])) for m in send.sent] == [3, 3, 1]
    send.sent.clear()
    await asyncio.gather(*(coalescer.send(push(n), size=60) for n in range(3)))
    assert [len(m.get("pushes", [m])) for m in send.sent] == [1, 1, 1]  # 60 + 60 > 100


async def test_every_push_of_a_failed_send_gets_the_error_and_the_next_go_on() -> None:
    send = FakeSend(fail=ConnectionError("down"))
    coalescer = PushCoalescer(send)
    results = await asyncio.gather(
        *(coalescer.send(push(n)) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, ConnectionError) for result in results)
    send.fail = None
    await asyncio.wait_for(coalescer.send(push(9)), 1)
    assert send.sent[-1] == push(9)


async def test_a_cancelled_waiting_push_is_not_sent() -> None:
    send = FakeSend(hold=True)
    coalescer = PushCoalescer(send)
    first = asyncio.ensure_future(coalescer.send(push(0)))
    await asyncio.wait_for(send.started.wait(), 1)
    gone = asyncio.ensure_future(coalescer.send(push(1)))
    kept = asyncio.ensure_future(coalescer.send(push(2)))
    await asyncio.sleep(0)
    gone.cancel()
    send.release.set()
    await asyncio.wait_for(asyncio.gather(first, kept), 1)
    assert send.sent == [push(0), push(2)]


async def test_one_coalescer_per_loop_layer_and_channel() -> None:
    layer, other = object(), object()
    assert coalescer_for(layer, "c") is coalescer_for(layer, "c")
    assert coalescer_for(layer, "c") is not coalescer_for(layer, "d")
    assert coalescer_for(layer, "c") is not coalescer_for(other, "c")


@pytest.mark.parametrize(
    "message", [{}, {"pushes": []}, {"pushes": "x"}, {"pushes": [push(0)] * 101}]
)
def test_a_batch_that_is_not_a_list_of_1_to_100_pushes_is_refused(message: Any) -> None:
    with pytest.raises(PushError):
        batch_pushes({"type": BATCH_TYPE, **message})


async def test_pushes_of_one_batch_share_an_insert_and_the_next_batch_waits(faulty_rethinkdb):
    """The worker's plan: pushes of one batch (no reply channel: one sender) go in one
    insert; the same sender's pushes of the next batch, and pushes alone, go after."""
    from changeflow_channels.worker.push_plan import plan, receive

    from .test_push_batches import MAX_BYTES, keyed_writer, message

    writer = await keyed_writer(faulty_rethinkdb.url)
    batches = [1, 1, 1, 2, 2, None, None]
    items = [
        receive(message("t", {"n": n}), writer, MAX_BYTES, batch) for n, batch in enumerate(batches)
    ]
    groups = [[items.index(item) for item in group.items] for group in plan(items)]
    assert groups == [[0, 1, 2], [3, 4], [5], [6]]


async def test_a_rounds_answers_to_one_channel_go_together_only_when_asked() -> None:
    from changeflow_channels.pushes import RESULTS_TYPE
    from changeflow_channels.worker.push_batches import PushPipeline
    from changeflow_channels.worker.push_plan import Received

    sent: list[tuple[str, dict[str, Any]]] = []

    async def send_reply(channel: str, answer: dict[str, Any]) -> bool:
        sent.append((channel, answer))
        return True

    def item(n: int, channel: str, together: bool) -> Received:
        message: dict[str, Any] = {"reply_channel": channel, "id": n}
        if together:
            message["batch_answers"] = True
        return Received(message, result={"type": "changeflow.push.result", "id": n, "ok": True})

    pipeline = PushPipeline(None, send_reply, None)
    items = [item(0, "a", True), item(1, "b", False), item(2, "a", True), item(3, "b", False)]
    await pipeline._answer([*items, item(4, "c", True)])
    results = {channel: answer for channel, answer in sent if channel == "a"}
    assert results["a"]["type"] == RESULTS_TYPE
    assert [r["id"] for r in results["a"]["results"]] == [0, 2]  # one message, in order
    assert [a["id"] for c, a in sent if c == "b"] == [1, 3]  # one each: not asked
    assert [a for c, a in sent if c == "c"] == [items[0].result | {"id": 4}]  # alone: as is


class FakeLayer:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def new_channel(self, prefix: str) -> str:
        return prefix + "process!1"

    async def receive(self, channel: str) -> dict[str, Any]:
        return await self.inbox.get()


async def test_answers_on_the_process_reply_channel_reach_their_own_push() -> None:
    from changeflow_channels.push_replies import replies_for, tagged_id

    layer = FakeLayer()
    replies = await replies_for(layer)
    assert await replies_for(layer) is replies
    (one, first), (two, second) = replies.expect(), replies.expect()
    result = {"type": "changeflow.push.result", "ok": True}
    await layer.inbox.put({"type": "changeflow.push.result", "id": tagged_id(99, "gone")})
    await layer.inbox.put(
        {
            "type": "changeflow.push.results",
            "results": [
                {**result, "id": tagged_id(two, "b")},
                {**result, "id": tagged_id(one, [1])},
            ],
        }
    )
    assert await asyncio.wait_for(first, 1) == {**result, "id": [1]}  # the caller's id back
    assert await asyncio.wait_for(second, 1) == {**result, "id": "b"}
    task = replies._task
    replies.forget(one)
    replies.forget(two)
    assert replies._task is None and task is not None
    await asyncio.sleep(0)
    assert task.cancelled() or task.done()  # no receive left pending
