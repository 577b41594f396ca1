"""The ASGI application of the security tests' Daphne, wired as the README shows
(sessions for browsers, tokens for scripts)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.security.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from changeflow_channels.asgi import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_application(),
    }
)
