"""Token authentication for non-browser websocket clients.

Browsers use the session (``AuthMiddlewareStack``). Scripts and services get a
signed token (``make_token(user)``) and send it as ``?token=...`` in the URL or
as an ``Authorization: Bearer ...`` header::

    "websocket": AllowedHostsOriginValidator(
        AuthMiddlewareStack(TokenAuthMiddleware(URLRouter(websocket_urlpatterns)))
    )

Tokens are signed with SECRET_KEY and expire after CHANGEFLOW_TOKEN_MAX_AGE
seconds (default one day). A valid token sets ``scope["user"]``; an invalid
one leaves the session's user (anonymous for a script) in place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core import signing

from .conf import get_settings

SALT = "changeflow_channels.auth.token"

# ASGI, as far as the middleware needs it (channels has no types).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def make_token(user: Any) -> str:
    """A signed, expiring token standing for ``user``."""
    token: str = signing.dumps({"uid": str(user.pk)}, salt=SALT)
    return token


def user_id_from_token(token: str) -> str | None:
    max_age = get_settings().token_max_age
    try:
        return str(signing.loads(token, salt=SALT, max_age=max_age)["uid"])
    except (signing.BadSignature, KeyError, TypeError):
        return None


def _active_user(user_id: str) -> Any:
    """The active user with that pk, or None."""
    user = get_user_model().objects.filter(pk=user_id).first()
    return user if user is not None and user.is_active else None


# The active user with that pk, or None (in a thread, closing stale database connections).
load_user: Callable[[str], Awaitable[Any]] = database_sync_to_async(_active_user)


def _token(scope: Scope) -> str | None:
    query_string: bytes = scope.get("query_string", b"")
    query = parse_qs(query_string.decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
    return None


class TokenAuthMiddleware:
    """Sets ``scope["user"]`` from a valid token (see the module's docstring); like
    channels' ``BaseMiddleware``, it hands ``inner`` a copy of the scope."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        token = _token(scope)
        if token:
            user_id = user_id_from_token(token)
            user = await load_user(user_id) if user_id else None
            if user is not None:
                scope.update(user=user, changeflow_token_user=user_id)
        await self.inner(scope, receive, send)


async def fresh_user(scope: dict[str, Any]) -> Any:
    """The connection's user as it is now: a logout, a deactivation or a changed
    permission since the connection opened is seen."""
    from channels.auth import get_user
    from django.contrib.auth.models import AnonymousUser

    token_user = scope.get("changeflow_token_user")
    if token_user is not None:
        return await load_user(token_user) or AnonymousUser()
    session = scope.get("session")
    if session is not None and getattr(session, "session_key", None):
        # A new store object reads the session afresh (a logout deleted it).
        return await get_user({"session": session.__class__(session.session_key)})
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
        return await load_user(str(user.pk)) or AnonymousUser()
    return user if user is not None else AnonymousUser()
