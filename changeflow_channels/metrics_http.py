"""Serving the metrics over HTTP: a Django view for web processes, a server for the worker.

    # urls.py of the project (Daphne processes)
    from changeflow_channels.metrics_http import metrics_view
    urlpatterns = [..., path("metrics", metrics_view)]

Each process serves its own figures: Prometheus scrapes every process.
"""

from __future__ import annotations

import logging
from wsgiref.simple_server import WSGIServer

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.exposition import choose_encoder

logger = logging.getLogger(__name__)


class MetricsServerError(Exception):
    """The worker's metrics server could not start; the message says why."""


async def metrics_view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in Prometheus' text format (or OpenMetrics, if asked)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = await sync_to_async(encoder, thread_sensitive=False)(REGISTRY)
    return HttpResponse(body, content_type=content_type)


def serve_metrics(port: int, host: str = "0.0.0.0") -> WSGIServer:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (the worker's server).

    prometheus_client's own server: scrapes never wait for the worker's event loop."""
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as error:
        raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {error}") from error
    logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
