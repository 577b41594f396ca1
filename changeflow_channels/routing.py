"""Routes to wire into a project's ``asgi.py``.

    application = ProtocolTypeRouter({
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(changeflow_channels.routing.websocket_urlpatterns))
        ),
    })

The worker (``manage.py changeflow``) reads its own channels; a project adds
nothing for it. Daphne imports this module: it loads nothing of the worker
(``worker/``) nor the RethinkDB driver.
"""

from __future__ import annotations

from django.urls import path

from .consumers import ChangeflowConsumer

websocket_urlpatterns = [
    path("ws/changeflow/", ChangeflowConsumer.as_asgi(), name="changeflow"),
]
