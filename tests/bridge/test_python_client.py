"""``changeflow_channels.client`` against Daphne, the worker and Redis: snapshots and
changes in order, flow control, pushes and their errors, and a resume after Daphne was
killed (SIGKILL) and started again on its port."""

from __future__ import annotations

import asyncio
import os

import pytest

from changeflow_channels import apush_to_flow
from changeflow_channels.client import ChangeflowClient, ChangeflowError
from changeflow_channels.testing.processes import DAPHNE_READY, free_port, start_daphne

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("worker")


async def next_event(events, timeout: float = 15.0) -> dict:
    return await asyncio.wait_for(events.__anext__(), timeout)


async def test_snapshot_then_changes_in_order_through_flow_control(daphne, stream_db, layer):
    stream = f"{stream_db}.orders"
    async with ChangeflowClient(daphne) as client:
        first = await client.push(stream, {"id": 0, "n": 0})
        assert first["ok"] and first["inserted"] == 1
        async with client.subscribe(stream, snapshot=True) as events:
            await events.subscribed()
            iterator = events.__aiter__()
            snapshot = await next_event(iterator)
            assert snapshot["event"] == "snapshot"
            assert snapshot["documents"] == [{"id": 0, "n": 0}]
            # More frames than the server's window (256 frames not acknowledged): only the
            # client's acknowledgements let them through. (Written one by one, server-side:
            # each change its own frame.)
            for n in range(1, 301):
                await apush_to_flow(
                    stream_db, "orders", {"id": n, "n": n}, wait=True, channel_layer=layer
                )
            seen = []
            while len(seen) < 300:
                event = await next_event(iterator)
                assert event["event"] == "change", event
                seen.append(event)
            seqs = [event["seq"] for event in seen]
            assert seqs == list(range(seqs[0], seqs[0] + 300))
            assert [event["new_val"]["id"] for event in seen] == list(range(1, 301))


async def test_a_refused_push_raises_its_code(daphne):
    async with ChangeflowClient(daphne) as client:
        with pytest.raises(ChangeflowError) as refused:
            await client.push("readonly.table", {"a": 1})  # tests.policies.TestPolicy
        assert refused.value.code == "forbidden"
        with pytest.raises(ChangeflowError) as bad:
            await client.push("db.table", "not a document")
        assert bad.value.code == "bad_request"


async def test_pushes_beyond_the_rate_limit_are_sent_again_until_written(daphne, stream_db):
    stream = f"{stream_db}.burst"
    async with ChangeflowClient(daphne, min_delay=0.2) as client:
        # 60 at once: the server takes 40 at a burst (CHANGEFLOW_PUSH_RATE 20/s), then 20 a second.
        answers = await asyncio.gather(
            *(client.push(stream, {"n": n}, retries=10) for n in range(60))
        )
    assert all(answer["ok"] and answer["inserted"] == 1 for answer in answers)


async def test_a_refused_subscription_raises_its_code(daphne):
    async with ChangeflowClient(daphne) as client:
        subscription = client.subscribe("private.table")
        with pytest.raises(ChangeflowError) as refused:
            await asyncio.wait_for(subscription.subscribed(), 10)
        assert refused.value.code == "forbidden"


async def test_resumes_exactly_after_daphne_is_killed_and_back(process_env, stream_db, layer):
    stream = f"{stream_db}.resume"
    port = free_port()
    env = {**os.environ, **process_env}

    def start():
        process = start_daphne("tests.asgi:application", port, env=env, cwd=str(REPO))
        process.wait_for(DAPHNE_READY, timeout=60)
        return process

    daphne = await asyncio.to_thread(start)
    url = f"ws://127.0.0.1:{port}/ws/changeflow/"
    try:
        async with ChangeflowClient(url, min_delay=0.1, max_delay=0.5) as client:
            async with client.subscribe(stream) as events:
                await events.subscribed()
                iterator = events.__aiter__()
                for n in range(5):
                    await client.push(stream, {"n": n})
                before = [await next_event(iterator) for _ in range(5)]
                daphne.kill()  # SIGKILL: the client sees its connection drop
                for n in range(5, 10):  # meanwhile, written server-side
                    await apush_to_flow(
                        stream_db, "resume", {"n": n}, wait=True, channel_layer=layer
                    )
                daphne = await asyncio.to_thread(start)
                after = [await next_event(iterator, timeout=30) for _ in range(5)]
        events_seen = before + after
        assert [event["event"] for event in events_seen] == ["change"] * 10  # no resync
        assert [event["new_val"]["n"] for event in events_seen] == list(range(10))
        seqs = [event["seq"] for event in events_seen]
        assert seqs == list(range(seqs[0], seqs[0] + 10))
    finally:
        daphne.stop()


async def test_a_push_too_large_is_refused_as_too_large_not_retried(daphne, stream_db):
    stream = f"{stream_db}.big"
    async with ChangeflowClient(daphne) as client:
        # Over CHANGEFLOW_MAX_FRAME_BYTES (64 KiB), under Daphne's 1 MiB: the server answers
        # too_large with the frame's size (it never read the frame, so no id).
        with pytest.raises(ChangeflowError) as server_side:
            await client.push(stream, {"pad": "x" * 100_000}, timeout=5)
        assert server_side.value.code == "too_large"
        # Over Daphne's limit: refused before it is sent (Daphne would close the connection).
        with pytest.raises(ChangeflowError) as client_side:
            await client.push(stream, {"pad": "x" * 1_100_000})
        assert client_side.value.code == "too_large"
        assert (await client.push(stream, {"small": True}))["ok"]  # the connection goes on
