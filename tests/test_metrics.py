"""The metrics module, the web view and the worker's server, in process (real registry, real HTTP)."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest
from django.core.management import CommandError
from django.test import override_settings
from prometheus_client import REGISTRY

from changeflow_channels import metrics
from changeflow_channels.management.commands.changeflow import start_metrics
from changeflow_channels.metrics_http import serve_metrics
from changeflow_channels.worker.hooks import Handler, HookRunner

from .metrics_helpers import Scrape, fetch, scrape


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def fresh_stream() -> str:
    return f"m_{uuid.uuid4().hex[:8]}.t"


def test_push_results_are_labelled_by_what_happened():
    assert metrics.push_result_label(None) == "invalid"
    assert metrics.push_result_label({"ok": True}) == "ok"
    # By the result's code, whatever its text says.
    rejected = {"ok": False, "error": "RethinkDB unavailable? no: a duplicate", "code": "rejected"}
    assert metrics.push_result_label(rejected) == "rejected"
    unavailable = {"ok": False, "error": "push not written", "code": "unavailable"}
    assert metrics.push_result_label(unavailable) == "unavailable"
    assert metrics.push_result_label({"ok": False, "error": "x", "code": "invalid"}) == "rejected"
    before = sample("changeflow_pushes_total", result="rejected")
    metrics.count_push(rejected)
    assert sample("changeflow_pushes_total", result="rejected") == before + 1


def test_a_change_read_is_stamped_and_counted_and_its_send_observed():
    stream = fresh_stream()
    table_metrics = metrics.for_stream(stream)
    assert metrics.for_stream(stream) is table_metrics  # made once
    message: dict = {"seq": 1}
    table_metrics.read(message)
    assert isinstance(message["read_at"], float)
    assert sample("changeflow_changes_read_total", stream=stream) == 1
    lag_count = sample("changeflow_group_send_lag_seconds_count")
    table_metrics.sent([message, {"seq": 2}])  # a message without read_at is counted, not timed
    assert sample("changeflow_changes_sent_total", stream=stream) == 2
    assert sample("changeflow_group_send_lag_seconds_count") == lag_count + 1

    metrics.forget_stream(stream)
    assert REGISTRY.get_sample_value("changeflow_changes_read_total", {"stream": stream}) is None
    assert metrics.for_stream(stream) is not table_metrics


def test_without_per_table_labels_every_table_shares_one_series():
    first, second = fresh_stream(), fresh_stream()
    with override_settings(CHANGEFLOW_METRICS_PER_TABLE=False):
        shared = metrics.for_stream(first)
        assert metrics.for_stream(second) is shared
    assert shared.label == metrics.ALL_STREAMS
    before = sample("changeflow_changes_read_total", stream="*")
    shared.read({})
    assert sample("changeflow_changes_read_total", stream="*") == before + 1
    metrics.forget_stream(first)  # the shared series stays
    assert REGISTRY.get_sample_value("changeflow_changes_read_total", {"stream": "*"}) is not None


async def test_hooks_are_timed_and_their_failures_counted_by_kind():
    async def fine(database, table, change):
        return None

    async def hangs(database, table, change):
        await asyncio.sleep(3600)

    def raises(database, table, change):
        raise RuntimeError("boom")

    names = [f"t{uuid.uuid4().hex[:6]}.{kind}" for kind in ("fine", "hangs", "raises")]
    handlers = [
        Handler(name, func) for name, func in zip(names, (fine, hangs, raises), strict=True)
    ]
    runner = HookRunner(handlers, timeout=0.05)
    runner.start()
    runner.submit("d", "t", {"type": "add"})
    await runner.stop(drain_timeout=5)
    fine_name, hangs_name, raises_name = names
    for name in names:
        assert sample("changeflow_hook_duration_seconds_count", handler=name) == 1
    assert sample("changeflow_hook_errors_total", handler=fine_name, kind="exception") == 0
    assert sample("changeflow_hook_errors_total", handler=hangs_name, kind="timeout") == 1
    assert sample("changeflow_hook_errors_total", handler=raises_name, kind="exception") == 1
    assert sample("changeflow_hook_duration_seconds_sum", handler=hangs_name) >= 0.05


@pytest.mark.django_db
async def test_the_view_serves_the_registry_in_either_format(async_client):
    response = await async_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    page = Scrape(response.content.decode())
    assert {"changeflow_websocket_clients", "changeflow_pushes"} <= page.families
    response = await async_client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")


async def test_the_worker_server_serves_metrics_and_a_busy_port_is_a_clear_error():
    server = serve_metrics(0, "127.0.0.1")
    try:
        port = server.server_port
        page = await scrape(f"http://127.0.0.1:{port}/metrics")
        assert "changeflow_leases_held" in page.families
        _, content_type = await fetch(f"http://127.0.0.1:{port}/metrics")
        assert content_type.startswith("text/plain")
        with pytest.raises(CommandError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            start_metrics(port, "127.0.0.1", None)
    finally:
        server.shutdown()
        server.server_close()


def test_the_metrics_port_comes_from_the_flag_or_the_setting():
    start_metrics(None, "127.0.0.1", None)  # neither: no server, no error
    with pytest.raises(CommandError, match="TCP port number"):
        start_metrics(None, "127.0.0.1", "9100")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(CommandError, match="cannot serve metrics"):
            start_metrics(None, "127.0.0.1", port)  # the setting's port is used
