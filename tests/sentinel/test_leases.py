"""Leases in a Sentinel master (``CHANGEFLOW_REDIS`` as a Sentinel host) through a failover:
they follow the master; a failover that loses writes loses the leases taken in them, which
``CHANGEFLOW_LEASE_REPLICAS`` (the replicas' acknowledgement) prevents."""

from __future__ import annotations

import asyncio

import pytest
from django.test import override_settings

from changeflow_channels.redis_layer import REDIS_ERRORS
from changeflow_channels.testing.sentinel import SentinelTopology
from changeflow_channels.worker.leases import LeaseStore, redis_target

pytestmark = pytest.mark.slow

IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def until_answers(call, timeout: float = 20.0):
    """``call()`` until Redis answers (the failover under way): its result."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await call()
        except REDIS_ERRORS:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)  # the failover: nothing to wait on but the answer


@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_lease_a_failover_would_lose_counts_only_once_replicas_acknowledged_it(
    replicas: int,
):
    """The replicas are cut off (what the master takes now, a failover loses) when ``a``
    takes a lease and renews another; then the master is killed. Without acknowledgements
    ``a`` believes it holds both, and after the failover ``b`` takes the first too: two
    holders. With one replica's acknowledgement required, ``a`` took neither: one holder."""
    # Two replicas: one is left to acknowledge once the other is the master.
    with SentinelTopology.running(replicas=2) as topology:
        with override_settings(CHANNEL_LAYERS=IN_MEMORY):
            target = redis_target("default", topology.host(), "changeflow")
        assert target is not None and target.description == "sentinel master changeflow"
        a = LeaseStore(target, "a", lease_time=30.0, timeout=2.0, replicas=replicas)
        b = LeaseStore(target, "b", lease_time=30.0, timeout=2.0, replicas=replicas)
        try:
            assert await a.acquire("db.kept")
            await asyncio.to_thread(topology.wait_replicated)
            await asyncio.to_thread(topology.cut_replicas)
            taken = await a.acquire("db.new")
            renewal = await a.renew(["db.kept"])
            assert renewal.renewed == {"db.kept"}
            assert taken is (replicas == 0)
            assert renewal.acknowledged is (replicas == 0)
            await asyncio.to_thread(topology.kill_master)
            await asyncio.to_thread(topology.heal_replicas)
            await asyncio.to_thread(topology.wait_failover)
            # b takes the lease a took in the lost writes (or never took).
            assert await until_answers(lambda: b.acquire("db.new")) is True
            held_twice = taken  # a still counts on it: it never heard otherwise
            assert held_twice is (replicas == 0)
            # The lease a took before the cut survived the failover, and is still a's.
            assert await b.acquire("db.kept") is False
            assert (await a.renew(["db.kept"])).renewed == {"db.kept"}
        finally:
            await a.close()
            await b.close()
