"""Which web pages may open a websocket: exact origins (scheme, host and port).

A browser sends the ``Origin`` of the page that opens a websocket, and sends the
site's cookies whatever that page is: checking the origin is what stops another
site, or another application on the same host (another port, or http against https:
cookies are not separated by port or scheme), from using a logged-in user's session.
channels' ``AllowedHostsOriginValidator`` compares host names only; this compares
whole origins.

The allowed origins are ``CHANGEFLOW_ALLOWED_ORIGINS`` (a list such as
``["https://example.com", "https://app.example.com:8443"]``), or by default (None) the
origin the request itself was made to: ``https`` for ``wss`` (or when Django's
``SECURE_PROXY_SSL_HEADER`` says so), ``http`` for ``ws``, and the host and port of the
``Host`` header (``X-Forwarded-Host`` with ``USE_X_FORWARDED_HOST``), provided that host
is in ``ALLOWED_HOSTS``.

The comparison is exact, on the serialization browsers send (RFC 6454, WHATWG URL):
scheme and host in lowercase, the port only when it is not the scheme's default. The
allowed origins are put in that form (``HTTPS://Example.com:443`` allows
``https://example.com``); an ``Origin`` header is not: no browser sends
``http://LOCALHOST`` or ``https://example.com:443``, so such a header comes from a
program, and is refused. ``null`` (sandboxed frames, ``file:`` pages) is refused.

A request without ``Origin`` does not come from a browser page. It is let in only with
a valid token (``TokenAuthMiddleware`` sets ``scope["changeflow_token_user"]``), never on
a session cookie alone; so this validator sits inside ``TokenAuthMiddleware``
(``changeflow_channels.asgi.websocket_application()``). A refused connection is told why
(``web.refusal``: an ``error`` frame ``forbidden``, then close code 4003).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from django.conf import settings as django_settings
from django.http.request import split_domain_port, validate_host

from ..conf import get_settings
from .refusal import CLOSE_ORIGIN, Refusal, refuse

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
# Django's default for a DEBUG site without ALLOWED_HOSTS.
DEBUG_HOSTS = [".localhost", "127.0.0.1", "[::1]"]

NO_ORIGIN = Refusal(
    CLOSE_ORIGIN,
    "forbidden",
    "no Origin header: browsers send one, and scripts must authenticate with a token "
    "(?token=... in the URL or an Authorization: Bearer header)",
)


class OriginError(ValueError):
    """Not an origin (``scheme://host[:port]``)."""


def canonical_origin(text: str) -> str:
    """``text`` as a browser serializes that origin: lowercase scheme and host, no default
    port, nothing after the port. ``OriginError`` for anything that is not one origin."""
    match = _ORIGIN.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise OriginError(f"{text!r} is not an origin (scheme://host[:port], nothing after)")
    scheme, host = match["scheme"].lower(), match["host"].lower()
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port <= 65535:
        raise OriginError(f"{text!r} has no valid port")
    if port is None or port == DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def configured_origins(value: Any) -> frozenset[str] | None:
    """The origins of ``CHANGEFLOW_ALLOWED_ORIGINS`` in browsers' form, or None (the
    request's own origin); ``OriginError`` for a bad entry."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        raise OriginError(f"{value!r} is not a list of origins")
    return frozenset(canonical_origin(item) for item in value)


def _header(scope: Scope, name: bytes) -> list[str]:
    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    return [value.decode("latin-1") for key, value in headers if key.lower() == name]


def request_scheme(scope: Scope) -> str:
    """``https`` or ``http``: the scheme of the page that would be this site's own."""
    proxy_header = getattr(django_settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy_header:
        name, secure_value = proxy_header
        header = name.lower().removeprefix("http_").replace("_", "-").encode("latin-1")
        values = _header(scope, header)
        if values:
            return "https" if values[0].split(",")[0].strip() == secure_value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def own_origin(scope: Scope) -> str | None:
    """The origin this request was made to, if its host is in ``ALLOWED_HOSTS``."""
    hosts = _header(scope, b"host")
    if getattr(django_settings, "USE_X_FORWARDED_HOST", False):
        forwarded = _header(scope, b"x-forwarded-host")
        hosts = [forwarded[0].split(",")[0].strip()] if forwarded else hosts
    if len(hosts) != 1:
        return None
    domain, port = split_domain_port(hosts[0])  # lowercased; ("", "") when malformed
    allowed = list(django_settings.ALLOWED_HOSTS) or (DEBUG_HOSTS if django_settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed):
        return None
    try:
        return canonical_origin(
            f"{request_scheme(scope)}://{domain}" + (f":{port}" if port else "")
        )
    except OriginError:
        return None


def origin_allowed(scope: Scope, origin: str) -> bool:
    """Whether the ``Origin`` header ``origin``, exactly as sent, is allowed."""
    allowed = configured_origins(get_settings().allowed_origins)
    if allowed is None:
        return origin == own_origin(scope)
    return origin in allowed


def refusal_for(scope: Scope) -> Refusal | None:
    """Why this websocket request may not go on, or None."""
    origins = _header(scope, b"origin")
    if not origins:
        return None if scope.get("changeflow_token_user") is not None else NO_ORIGIN
    if len(origins) == 1 and origin_allowed(scope, origins[0]):
        return None
    shown = repr(origins[0][:100])
    return Refusal(CLOSE_ORIGIN, "forbidden", f"websockets from the origin {shown} are not allowed")


class ChangeflowOriginValidator:
    """ASGI middleware: lets a websocket through only from an allowed origin, or without
    an ``Origin`` with a valid token (see the module's docstring). Other scopes pass."""

    def __init__(self, application: ASGIApp) -> None:
        self.application = application

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "websocket":
            refusal = refusal_for(scope)
            if refusal is not None:
                await refuse(receive, send, refusal)
                return
        await self.application(scope, receive, send)
