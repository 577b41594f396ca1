"""Routes to wire into a project's ``asgi.py``.

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(changeflow_channels.routing.websocket_urlpatterns))
        ),
    })

The worker (``manage.py changeflow``) routes its own channel with
``channel_application()``; a project does not need to add it.

Daphne imports this module: it loads nothing of the worker (``worker/``) nor
the RethinkDB driver; ``channel_routes()`` imports the worker's consumer when
called.
"""

from __future__ import annotations

from channels.routing import ChannelNameRouter
from django.urls import path

from .conf import get_settings
from .consumers import ChangeflowConsumer
from .sync import sync_channel

websocket_urlpatterns = [
    path("ws/changeflow/", ChangeflowConsumer.as_asgi(), name="changeflow"),
]


def channel_routes() -> dict[str, object]:
    """The worker's channels (pushes, and sync requests) to ``PushConsumer``."""
    from .worker.push_consumer import PushConsumer

    channel = get_settings().channel
    return {channel: PushConsumer.as_asgi(), sync_channel(channel): PushConsumer.as_asgi()}


def channel_application() -> ChannelNameRouter:
    """The worker's application: pushes on ``CHANGEFLOW_CHANNEL`` go to ``PushConsumer``."""
    return ChannelNameRouter(channel_routes())
