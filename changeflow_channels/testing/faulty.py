"""One interface for fault injection, on the ReQL test server and on a real RethinkDB."""

from __future__ import annotations

from typing import Protocol


class FaultyRethinkDB(Protocol):
    """A RethinkDB of a test's own that the test may break.

    ``ThreadedReqlServer`` (in memory) and ``processes.RethinkDBServer`` (a real
    ``rethinkdb`` process) both provide it.
    """

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...

    def start(self) -> None:
        """Up again on the same port, with the data it had."""

    def stop(self, *, keep_data: bool = True) -> None:
        """Down (every client dropped, no new connection) until ``start()``."""

    def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        """Down for ``down_for`` seconds, back on the same port, with or without its data."""

    def freeze(self) -> None:
        """Keep connections open but answer nothing until ``thaw()``."""

    def thaw(self) -> None:
        """Answer again."""

    def drop_connections(self) -> int:
        """Every client connection drops (open feeds die with it); returns how many."""
