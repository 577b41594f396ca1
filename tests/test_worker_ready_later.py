"""A worker whose feeds are not all open in time says so, and says again once
they are (3,000 tables of a real RethinkDB take it over a minute; before, the
warning was the last word on readiness)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from django.test import override_settings
from rethinkdb import RethinkDB

from changeflow_channels.worker import create_worker
from changeflow_channels.worker.flow import Flow

from .polling import LogEvent

READY_WITHIN = 1.0  # instead of READY_TIMEOUT's 30 s


async def test_a_worker_not_ready_in_time_says_when_it_is(faulty_rethinkdb, monkeypatch):
    database = "late_" + uuid.uuid4().hex[:8]
    r = RethinkDB()
    with r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port) as conn:
        r.db_create(database).run(conn)
        r.db(database).table_create("t").run(conn)
    monkeypatch.setattr(Flow.wait_ready, "__defaults__", (READY_WITHIN,))
    runner = logging.getLogger("changeflow_channels.worker.runner")
    late, ready = LogEvent("were not all open within"), LogEvent("s after its start")
    for handler in (late, ready):
        runner.addHandler(handler)
    monkeypatch.setattr(runner, "level", logging.INFO)
    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    try:
        with override_settings(
            CHANNEL_LAYERS=layers,
            CHANGEFLOW_HANDLERS=[],
            CHANGEFLOW_RETHINKDB=faulty_rethinkdb.url,
            CHANGEFLOW_WATCH=[f"{database}.*"],
        ):
            worker = create_worker()
            faulty_rethinkdb.freeze()  # nothing opens while it is frozen
            running = asyncio.ensure_future(worker.arun())
            try:
                await asyncio.wait_for(late.event.wait(), 30)
                assert not ready.event.is_set()
            finally:
                faulty_rethinkdb.thaw()
            await asyncio.wait_for(ready.event.wait(), 60)
            worker.stopping.set()
            await asyncio.wait_for(running, 30)
    finally:
        for handler in (late, ready):
            runner.removeHandler(handler)
        with r.connect(host=faulty_rethinkdb.host, port=faulty_rethinkdb.port) as conn:
            r.db_drop(database).run(conn)
