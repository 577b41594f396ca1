"""``rethinkdb://[user[:password]@]host[:port][/db]`` URLs, as CHANGEFLOW_RETHINKDB takes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 28015


@dataclass(frozen=True)
class RethinkDBAddress:
    host: str
    port: int = DEFAULT_PORT
    user: str = "admin"
    password: str = ""
    db: str | None = None
    tls: bool = False

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the driver's ``r.connect``."""
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
        }
        if self.db:
            kwargs["db"] = self.db
        if self.tls:
            kwargs["ssl"] = {}
        return kwargs


def parse_rethinkdb_url(url: str) -> RethinkDBAddress:
    """Parse a server URL; raise ``ValueError`` saying what is wrong."""
    if not isinstance(url, str):
        raise ValueError(f"expected a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("rethinkdb", "rethinkdbs"):
        raise ValueError(
            f"the scheme must be rethinkdb:// or rethinkdbs://, not {parts.scheme or 'none'!r}"
        )
    if not parts.hostname:
        raise ValueError("the URL names no host")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"invalid port: {exc}") from None
    if parts.query or parts.fragment:
        raise ValueError("query strings and fragments are not supported")
    db = parts.path.lstrip("/") or None
    return RethinkDBAddress(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else "admin",
        password=unquote(parts.password) if parts.password else "",
        db=db,
        tls=parts.scheme == "rethinkdbs",
    )
