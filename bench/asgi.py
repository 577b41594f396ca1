"""The ASGI application Daphne serves in the benchmark: the product's websocket
route, and a bare consumer for the delivery ceiling."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from changeflow_channels.routing import websocket_urlpatterns  # noqa: E402

from .bare_consumer import BareConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter([*websocket_urlpatterns, path("ws/bench/bare/", BareConsumer.as_asgi())])
            )
        ),
    }
)
