"""Token authentication for non-browser websocket clients.

Browsers use the session (``AuthMiddlewareStack``). Scripts and services get a
signed token (``make_token(user)``) and send it as ``?token=...`` in the URL or
as an ``Authorization: Bearer ...`` header; they need no ``Origin`` header. The
wiring is ``changeflow_channels.asgi.websocket_application()``::

    AuthMiddlewareStack(TokenAuthMiddleware(ChangeflowOriginValidator(URLRouter(...))))

A token is signed with SECRET_KEY and carries its user's pk, its issue time and a
short HMAC of the user's session auth hash (Django's: it changes with the password).
It ends:

- ``CHANGEFLOW_TOKEN_MAX_AGE`` seconds after it was issued (default one day);
- when its user changes password, or is deactivated or deleted (revoked).

Both are checked when a connection opens and at every permission re-check
(``web.recheck``): an ended token closes the connection (4001 expired, 4002 invalid
or revoked, after an ``error`` frame saying which: see docs/protocol.md). A token
given but not valid is refused the same way at once, never passed over in favour of
the session. ``CHANGEFLOW_TOKEN_CONNECTIONS`` caps the connections open at once per
token and per user (``web.connection_caps``; 4004).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

from .conf import get_settings
from .web.refusal import (
    CLOSE_TOKEN_EXPIRED,
    CLOSE_TOKEN_INVALID,
    CLOSE_UNAVAILABLE,
    UNAUTHORIZED,
    Refusal,
    refuse,
)

logger = logging.getLogger(__name__)

SALT = "changeflow_channels.auth.token"
# The HMAC of the user's session auth hash in a token (hex digits).
HASH_LENGTH = 20

# ASGI, as far as the middleware needs it (channels has no types).
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenEnded(Exception):
    """A token that no longer stands for its user: expired, invalid or revoked.
    ``refusal`` says how the connection is told (close code, error code, message)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


EXPIRED = Refusal(CLOSE_TOKEN_EXPIRED, UNAUTHORIZED, "your token has expired: get a new one")
INVALID = Refusal(CLOSE_TOKEN_INVALID, UNAUTHORIZED, "your token is not valid: get a new one")
REVOKED = Refusal(
    CLOSE_TOKEN_INVALID,
    UNAUTHORIZED,
    "your token was revoked (password changed, or account deactivated): get a new one",
)


@dataclass(frozen=True)
class Claims:
    """What a token says: whose it is, when it was issued, and its user's password state."""

    user_id: str
    issued_at: float
    user_hash: str

    def expires_at(self) -> float:
        return self.issued_at + max_age_seconds()


def max_age_seconds() -> float:
    max_age = get_settings().token_max_age
    return max_age.total_seconds() if isinstance(max_age, timedelta) else float(max_age)


def user_hash(user: Any) -> str:
    """A short HMAC of the user's session auth hash (which changes with the password);
    "" for a user class without one (then only deactivation and expiry end a token)."""
    get_hash = getattr(user, "get_session_auth_hash", None)
    if not callable(get_hash):
        return ""
    digest: str = salted_hmac(SALT + ".user", get_hash()).hexdigest()
    return digest[:HASH_LENGTH]


def make_token(user: Any) -> str:
    """A signed token standing for ``user`` until it expires or is revoked."""
    claims = {"uid": str(user.pk), "iat": round(time.time(), 3), "h": user_hash(user)}
    token: str = signing.dumps(claims, salt=SALT)
    return token


def read_token(token: str, now: float | None = None) -> Claims:
    """The claims of a well-signed token that has not expired; ``TokenEnded`` otherwise
    (a token of an older format, without issue time or user hash, is invalid)."""
    try:
        data = signing.loads(token, salt=SALT)
        claims = Claims(str(data["uid"]), float(data["iat"]), str(data["h"]))
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise TokenEnded(INVALID) from None
    if (time.time() if now is None else now) >= claims.expires_at():
        raise TokenEnded(EXPIRED)
    return claims


def user_id_from_token(token: str) -> str | None:
    """The pk of a valid token's user (not checked against the database), or None."""
    try:
        return read_token(token).user_id
    except TokenEnded:
        return None


def _active_user(user_id: str) -> Any:
    """The active user with that pk, or None."""
    user = get_user_model().objects.filter(pk=user_id).first()
    return user if user is not None and user.is_active else None


# The active user with that pk, or None (in a thread, closing stale database connections).
load_user: Callable[[str], Awaitable[Any]] = database_sync_to_async(_active_user)


async def token_user(claims: Claims) -> Any:
    """The token's user, as it is now; ``TokenEnded`` when the token expired meanwhile,
    or the user was deactivated, deleted or changed password. A database error passes."""
    if time.time() >= claims.expires_at():
        raise TokenEnded(EXPIRED)
    user = await load_user(claims.user_id)
    if user is None or not constant_time_compare(user_hash(user), claims.user_hash):
        raise TokenEnded(REVOKED)
    return user


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
    """Sets ``scope["user"]`` (and ``changeflow_token_user``, ``changeflow_token``) from a
    valid token; refuses a connection whose token is not valid (see the module's
    docstring) or whose token or user has ``CHANGEFLOW_TOKEN_CONNECTIONS`` connections
    open already. Like channels' ``BaseMiddleware``, it hands ``inner`` a copy of the scope."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from .web.connection_caps import held_connection

        scope = dict(scope)
        token = _token(scope) if scope.get("type") == "websocket" else None
        if not token:
            await self.inner(scope, receive, send)
            return
        try:
            claims = read_token(token)
            user = await token_user(claims)
        except TokenEnded as ended:
            await refuse(receive, send, ended.refusal)
            return
        except Exception:  # the connection's boundary: the user database failed
            logger.exception("loading a token's user failed; refusing the connection")
            message = "your identity cannot be checked now: try again later"
            await refuse(receive, send, Refusal(CLOSE_UNAVAILABLE, "unavailable", message))
            return
        scope.update(user=user, changeflow_token_user=claims.user_id, changeflow_token=claims)
        async with held_connection(token, claims.user_id) as refusal:
            if refusal is not None:
                await refuse(receive, send, refusal)
                return
            await self.inner(scope, receive, send)


async def fresh_user(scope: dict[str, Any]) -> Any:
    """The connection's user as it is now: a logout, a deactivation or a changed
    permission since the connection opened is seen. A token connection's token is
    checked again: ``TokenEnded`` when it expired or was revoked meanwhile."""
    from channels.auth import get_user
    from django.contrib.auth.models import AnonymousUser

    claims = scope.get("changeflow_token")
    if isinstance(claims, Claims):
        return await token_user(claims)
    session = scope.get("session")
    if session is not None and getattr(session, "session_key", None):
        # A new store object reads the session afresh (a logout deleted it).
        return await get_user({"session": session.__class__(session.session_key)})
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False) and getattr(user, "pk", None):
        return await load_user(str(user.pk)) or AnonymousUser()
    return user if user is not None else AnonymousUser()
