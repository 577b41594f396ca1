"""The worker becomes ready whatever tables appear and disappear while it starts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from channels.layers import get_channel_layer
from django.test import override_settings

from changeflow_channels.conf import get_settings
from changeflow_channels.worker.flow import Flow

from .polling import poll_until

VANISHED = "vanished_" + uuid.uuid4().hex[:8]


@pytest.fixture
async def flow(rethinkdb_target, dbname) -> AsyncIterator[Flow]:
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
        CHANGEFLOW_RETHINKDB=rethinkdb_target.url,
        CHANGEFLOW_WATCH=[f"{dbname}.*", f"{VANISHED}.*"],
    ):
        instance = Flow(get_settings(), get_channel_layer(), [])
        yield instance
        await instance.stop()


async def test_a_table_dropped_while_the_worker_starts_is_no_longer_waited_for(
    flow, dbname, conn, r
):
    r.table_create("kept").run(conn)
    # Discovery read this table's row just before its database was dropped:
    # its feed ends with "Database ... does not exist".
    flow._table_added(VANISHED, "t", "id", False)
    await flow.start()
    assert await flow.wait_ready(timeout=20)
    assert not flow.is_following(f"{VANISHED}.t")

    async def following() -> bool:
        # A real server may report a table just created a little later.
        return flow.is_following(f"{dbname}.kept")

    await poll_until(following, bool, 10, lambda _: f"{dbname}.kept is not followed")
