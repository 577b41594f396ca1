"""ASGI entry point: HTTP (pages, static files) and the changeflow websocket."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from changeflow_channels.asgi import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Daphne serves no static files itself; for the demo Django does (DEBUG).
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application(),
    }
)
