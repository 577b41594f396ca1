"""The websocket side of a project's ``asgi.py``, wired securely in one call::

    application = ProtocolTypeRouter(
        {"http": django_asgi_app, "websocket": websocket_application()}
    )

``websocket_application(routes)`` is
``AuthMiddlewareStack(TokenAuthMiddleware(ChangeflowOriginValidator(URLRouter(routes))))``:
the session (browsers), then a token (scripts; an invalid one is refused), then the
exact origin check (``web.origins``), which must come after the token so that it knows
whether a request without ``Origin`` brought a valid token. Around them,
``IdentityUnavailable`` refuses readably (4012) a connection whose session or user could not
be loaded (the database unreachable), where Daphne would answer a bare 500.

``old_origin_validators(application)`` finds channels' host-name-only validators in an
application's websocket wrappers (system check W008).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from .auth import TokenAuthMiddleware
from .web.origins import ChangeflowOriginValidator, Receive, Scope, Send
from .web.refusal import CLOSE_UNAVAILABLE, Refusal, refuse

logger = logging.getLogger(__name__)

UNAVAILABLE = Refusal(
    CLOSE_UNAVAILABLE, "unavailable", "your identity cannot be checked now: try again later"
)

# Attributes under which ASGI wrappers keep what they wrap (channels' middleware:
# ``inner``; its OriginValidator and Django's static files handler: ``application``).
INNER_ATTRIBUTES = ("inner", "application", "app")
MAX_DEPTH = 20


def websocket_application(routes: list[Any] | None = None) -> Any:
    """The websocket application: ``routes`` (default changeflow's ``ws/changeflow/``)
    behind sessions, tokens and the exact origin check."""
    from channels.auth import AuthMiddlewareStack
    from channels.routing import URLRouter

    if routes is None:
        from .routing import websocket_urlpatterns

        routes = websocket_urlpatterns
    return IdentityUnavailable(
        AuthMiddlewareStack(TokenAuthMiddleware(ChangeflowOriginValidator(URLRouter(routes))))
    )


class IdentityUnavailable:
    """ASGI middleware: a websocket whose identity could not be loaded (the session or user
    database raised before the application took the handshake) is refused with 4012 and a
    reason (``web.refusal``), not a bare 500. Errors after that are not its business."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "websocket":
            await self.inner(scope, receive, send)
            return
        started = False  # the application read the handshake or sent something

        async def receiving() -> dict[str, Any]:
            nonlocal started
            started = True
            return await receive()

        async def sending(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.inner(scope, receiving, sending)
        except Exception:  # the connection's boundary, before the application took it
            if started:
                raise
            logger.exception("loading a websocket's identity failed; refusing it (4012)")
            await refuse(receive, send, UNAVAILABLE)


def _wrapped(application: Any) -> Iterator[Any]:
    """``application`` and what it wraps, outermost first."""
    seen: set[int] = set()
    for _ in range(MAX_DEPTH):
        if application is None or id(application) in seen:
            return
        seen.add(id(application))
        yield application
        application = next(
            (getattr(application, name) for name in INNER_ATTRIBUTES if hasattr(application, name)),
            None,
        )


def old_origin_validators(application: Any) -> list[str]:
    """The names of channels' ``OriginValidator``s (``AllowedHostsOriginValidator`` makes
    one) that wrap ``application``'s websockets: they compare host names only."""
    from channels.security.websocket import OriginValidator

    mapping = getattr(application, "application_mapping", None)
    websocket = mapping.get("websocket") if isinstance(mapping, dict) else application
    return [
        type(wrapper).__name__
        for wrapper in _wrapped(websocket)
        if isinstance(wrapper, OriginValidator)
    ]


def wrapped_validators(application: Any) -> int | None:
    """How many ``ChangeflowOriginValidator`` wrap ``application``'s websockets, or None
    when its wrappers could not be followed down to the routes (a custom wrapper)."""
    from channels.routing import URLRouter

    mapping = getattr(application, "application_mapping", None)
    websocket = mapping.get("websocket") if isinstance(mapping, dict) else application
    chain = list(_wrapped(websocket))
    if not chain or not isinstance(chain[-1], URLRouter):
        return None
    return sum(isinstance(wrapper, ChangeflowOriginValidator) for wrapper in chain)
