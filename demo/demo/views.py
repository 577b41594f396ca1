"""The demo page. Its data comes over the websocket (snapshots, then changes)."""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    context = {
        "default_stream": "demo.messages",
        "mode": os.environ.get("CHANGEFLOW_DEMO_MODE", ""),
    }
    return render(request, "demo/index.html", context)
