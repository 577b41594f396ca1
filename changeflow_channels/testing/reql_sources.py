"""What a changefeed follows: a table or a system table hands each change to its
subscribed feeds (table-wide ones in an ordered set, ``get().changes()`` ones keyed
by primary key)."""

from __future__ import annotations

from typing import Any, Protocol

from .reql_datum import sort_key

SYSTEM_DB = "rethinkdb"


class Subscriber(Protocol):
    """What a table hands its changes to (a changefeed)."""

    def push(self, old: Any, new: Any) -> None: ...

    def abort(self, message: str) -> None: ...


class FeedSource:
    """Something a changefeed can follow: a table or a system table."""

    db: str
    name: str
    primary_key: str = "id"
    is_system = False

    def __init__(self) -> None:
        self.feeds: dict[Subscriber, None] = {}  # insertion-ordered set
        self.key_feeds: dict[tuple, dict[Subscriber, None]] = {}

    def notify(self, key: tuple, old: Any, new: Any) -> None:
        for feed in self.feeds:
            feed.push(old, new)
        point = self.key_feeds.get(key)
        if point:
            for feed in point:
                feed.push(old, new)

    def subscribe(self, feed: Subscriber, key: tuple | None = None) -> None:
        if key is None:
            self.feeds[feed] = None
        else:
            self.key_feeds.setdefault(key, {})[feed] = None

    def unsubscribe(self, feed: Subscriber, key: tuple | None = None) -> None:
        if key is None:
            self.feeds.pop(feed, None)
            return
        point = self.key_feeds.get(key)
        if point is not None:
            point.pop(feed, None)
            if not point:
                del self.key_feeds[key]

    def abort_feeds(self, message: str) -> None:
        feeds = list(self.feeds)
        for point in self.key_feeds.values():
            feeds.extend(point)
        for feed in feeds:
            feed.abort(message)

    @property
    def qualified(self) -> str:
        return f"{self.db}.{self.name}"

    # Read interface shared with Table.
    def scan(self) -> list[dict]:
        raise NotImplementedError

    def get(self, key: Any) -> dict | None:
        wanted = sort_key(key)
        for row in self.scan():
            if sort_key(row.get(self.primary_key)) == wanted:
                return row
        return None
