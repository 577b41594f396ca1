"""``rethinkdb://[user[:password]@]host[:port][,host[:port]...][/db]`` URLs, as
CHANGEFLOW_RETHINKDB takes them.

Several hosts are servers of one cluster (or proxies in front of it): the worker
connects to one that answers, and to another when that one is lost (``rethink.connect``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 28015

Server = tuple[str, int]


@dataclass(frozen=True)
class RethinkDBAddress:
    host: str
    port: int = DEFAULT_PORT
    user: str = "admin"
    password: str = ""
    db: str | None = None
    tls: bool = False
    # More servers of the same cluster, after ``host:port``.
    others: tuple[Server, ...] = ()

    @property
    def servers(self) -> tuple[Server, ...]:
        """Every server, the first one first."""
        return ((self.host, self.port), *self.others)

    @property
    def where(self) -> str:
        """``host:port``, or the servers' list, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self.servers)

    def connect_kwargs(self, server: Server | None = None) -> dict[str, Any]:
        """Keyword arguments for the driver's ``r.connect`` (to the first server, or ``server``)."""
        host, port = server or (self.host, self.port)
        kwargs: dict[str, Any] = {
            "host": host,
            "port": port,
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
    if parts.query or parts.fragment:
        raise ValueError("query strings and fragments are not supported")
    credentials, _, hosts = parts.netloc.rpartition("@")
    listed = hosts.split(",")
    if len(listed) > 1 and "" in listed:
        raise ValueError("an empty host in the list of hosts")
    servers = [_server(host) for host in listed]
    first = urlsplit(f"//{credentials}@" if credentials else "//")
    db = parts.path.lstrip("/") or None
    return RethinkDBAddress(
        host=servers[0][0],
        port=servers[0][1],
        user=unquote(first.username) if first.username else "admin",
        password=unquote(first.password) if first.password else "",
        db=db,
        tls=parts.scheme == "rethinkdbs",
        others=tuple(servers[1:]),
    )


def _server(text: str) -> Server:
    """``host[:port]`` (``[v6]:port`` too) of the URL's list of hosts."""
    parts = urlsplit(f"//{text}")
    if not parts.hostname:
        raise ValueError("the URL names no host" if not text else f"no host in {text!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"invalid port: {exc}") from None
    return parts.hostname, port
