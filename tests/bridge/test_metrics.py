"""Prometheus metrics, end to end: the worker's ``--metrics-port`` and the web view in Daphne.

Worker and Daphne are real processes; their pages are read with a real HTTP
client and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import websockets

from changeflow_channels.testing.processes import (
    ManagedProcess,
    free_port,
)

from ..conftest import save_output
from ..metrics_helpers import Scrape, fetch, scrape, wait_for_metrics
from .conftest import running_daphne, start_ready_worker
from .helpers import WsClient, receive
from .test_flow import push

RAISING = "tests.hooks.raising_hook.flow_handlers"
ASYNC = "tests.hooks.async_hook.flow_handlers"
WORKER_METRICS = {
    "changeflow_changes_read",
    "changeflow_changes_sent",
    "changeflow_feed_restarts",
    "changeflow_group_send_lag_seconds",
    "changeflow_hook_duration_seconds",
    "changeflow_hook_errors",
    "changeflow_pushes",
    "changeflow_leases_held",
}
WEB_METRICS = {
    "changeflow_websocket_clients",
    "changeflow_subscriptions",
    "changeflow_websocket_send_lag_seconds",
}


class MetricsWorker:
    """A worker of the test's own (its channel, its database) serving /metrics."""

    def __init__(self, process: ManagedProcess, channel: str, url: str) -> None:
        self.process = process
        self.channel = channel
        self.url = url


@pytest.fixture
def metrics_worker_factory(process_env, stream_db) -> Iterator:
    started: list[ManagedProcess] = []

    def start(**extra_env: str) -> MetricsWorker:
        port = free_port()
        channel = "cf-" + uuid.uuid4().hex[:8]
        env = {
            "CHANGEFLOW_TEST_CHANNEL": channel,
            "CHANGEFLOW_TEST_WATCH": f"{stream_db}.*",
            "CHANGEFLOW_TEST_HANDLERS": "tests.hooks.raising_hook,tests.hooks.async_hook",
            **extra_env,
        }
        process = start_ready_worker(
            process_env, "--metrics-port", str(port), "--metrics-host", "127.0.0.1", extra_env=env
        )
        started.append(process)
        return MetricsWorker(process, channel, f"http://127.0.0.1:{port}/metrics")

    yield start
    for process in started:
        process.stop()
        save_output("worker-metrics", process)


async def push_and_wait(layer, channel: str, database: str, table: str, data, **fields) -> dict:
    reply = await layer.new_channel()
    await layer.send(channel, push(database, table, data, reply_channel=reply, **fields))
    return await receive(layer, reply)


async def test_the_worker_serves_its_metrics_and_they_move_with_pushes_and_changes(
    metrics_worker_factory, layer, stream_db
):
    worker = metrics_worker_factory()
    worker.process.wait_for(r"metrics on http://127\.0\.0\.1:\d+/metrics", from_start=True)
    stream = f"{stream_db}.t"
    before = await scrape(worker.url)
    assert before.families >= WORKER_METRICS, before.families
    assert before.value("changeflow_leases_held") is not None
    assert before.get("changeflow_pushes_total", result="ok") == 0
    assert before.value("changeflow_pushes_total", result="invalid") == 0  # present from the start

    result = await push_and_wait(layer, worker.channel, stream_db, "t", {"n": 1})
    assert result["ok"], result

    def delivered(page: Scrape) -> bool:
        return (
            page.get("changeflow_changes_sent_total", stream=stream) == 1
            and page.get("changeflow_hook_duration_seconds_count", handler=RAISING) == 1
            and page.get("changeflow_hook_duration_seconds_count", handler=ASYNC) == 1
        )

    page = await wait_for_metrics(worker.url, delivered)
    assert page.get("changeflow_pushes_total", result="ok") == 1
    assert page.get("changeflow_changes_read_total", stream=stream) == 1
    assert page.get("changeflow_group_send_lag_seconds_count") == 1
    lag = page.get("changeflow_group_send_lag_seconds_sum")
    assert 0 <= lag < 5, lag
    assert page.get("changeflow_hook_errors_total", handler=RAISING, kind="exception") == 1
    assert page.get("changeflow_hook_errors_total", handler=ASYNC, kind="exception") == 0
    assert page.get("changeflow_feed_restarts_total", stream=stream) == 0
    # The worker's channel is its own, so are its leases: it holds the one table's.
    await wait_for_metrics(worker.url, lambda p: p.value("changeflow_leases_held") == 1)

    # Refused before writing, refused by RethinkDB: each counted by its result.
    result = await push_and_wait(layer, worker.channel, stream_db, "t", {"n": 2}, op="bogus")
    assert not result["ok"]
    result = await push_and_wait(
        layer, worker.channel, stream_db, "t", {"n": 3}, op="update", key="no-such-key"
    )
    page = await wait_for_metrics(
        worker.url, lambda p: p.get("changeflow_pushes_total", result="invalid") == 1
    )
    assert (
        page.get("changeflow_pushes_total", result="ok")
        + page.get("changeflow_pushes_total", result="rejected")
        == 2
    ), page.text


async def test_a_lost_rethinkdb_connection_counts_a_feed_restart(
    metrics_worker_factory, layer, stream_db, faulty_rethinkdb
):
    worker = metrics_worker_factory(CHANGEFLOW_TEST_RETHINKDB_URL=faulty_rethinkdb.url)
    stream = f"{stream_db}.t"
    assert (await push_and_wait(layer, worker.channel, stream_db, "t", {"n": 1}))["ok"]
    await wait_for_metrics(
        worker.url, lambda p: p.get("changeflow_changes_sent_total", stream=stream) == 1
    )
    following = rf"following {stream} \(epoch"
    await asyncio.to_thread(worker.process.wait_for, following, from_start=True)
    faulty_rethinkdb.drop_connections()
    await wait_for_metrics(
        worker.url, lambda p: p.get("changeflow_feed_restarts_total", stream=stream) >= 1
    )
    # Once the feed is back, the next change is read and sent in its new epoch.
    await asyncio.to_thread(worker.process.wait_for, following)
    assert (await push_and_wait(layer, worker.channel, stream_db, "t", {"n": 2}))["ok"]
    await wait_for_metrics(
        worker.url, lambda p: p.get("changeflow_changes_sent_total", stream=stream) == 2
    )


@pytest.fixture
def web(process_env) -> Iterator[str]:
    """A Daphne of the test's own (so the gauges are this test's alone); yields its base URL."""
    with running_daphne(process_env, "daphne-metrics") as port:
        yield f"127.0.0.1:{port}"


@pytest.mark.usefixtures("worker")
async def test_the_web_view_serves_clients_subscriptions_and_websocket_send_lag(
    web, layer, stream_db
):
    url = f"http://{web}/metrics"
    page = await scrape(url)
    assert page.families >= WEB_METRICS, page.families
    assert page.value("changeflow_websocket_clients") == 0
    assert page.value("changeflow_subscriptions") == 0
    assert page.value("changeflow_websocket_send_lag_seconds_count") == 0

    connection = await websockets.connect(
        f"ws://{web}/ws/changeflow/", open_timeout=10, origin=f"http://{web}"
    )
    try:
        client = WsClient(connection)
        stream = f"{stream_db}.t"
        await client.subscribe(stream)
        await client.subscribe(f"{stream_db}.other")
        page = await scrape(url)
        assert page.value("changeflow_websocket_clients") == 1
        assert page.value("changeflow_subscriptions") == 2

        result = await push_and_wait(layer, "changeflow", stream_db, "t", {"n": 1})
        assert result["ok"], result
        await client.changes(stream, 1)
        page = await wait_for_metrics(
            url, lambda p: p.get("changeflow_websocket_send_lag_seconds_count") == 1
        )
        lag = page.get("changeflow_websocket_send_lag_seconds_sum")
        assert 0 <= lag < 5, lag

        await client.request("unsubscribe", f"{stream_db}.other")
        assert (await scrape(url)).value("changeflow_subscriptions") == 1
    finally:
        await connection.close()
    await wait_for_metrics(
        url,
        lambda p: (
            p.value("changeflow_websocket_clients") == 0
            and p.value("changeflow_subscriptions") == 0
        ),
    )

    # Prometheus asking for OpenMetrics gets it.
    text, content_type = await fetch(url, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text"), content_type
    assert "changeflow_subscriptions" in text and text.endswith("# EOF\n")
