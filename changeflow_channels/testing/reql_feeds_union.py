"""``union`` with changefeeds: ``r.table('a').changes().union(r.table('b').changes())``.

The union is itself a changefeed: the items of its finite parts come first, then
the changes of its feeds as they happen. Transforms chained after the union
(``.limit(n)``, ``['new_val']``...) apply to the merged items; each part keeps its
own. An error in a part (its table dropped, a failing transform) ends the union.
"""

from __future__ import annotations

from typing import Any

from .reql_errors import ReqlOpFailedError
from .reql_feeds import ChangeFeed, Note


class UnionFeed(ChangeFeed):
    def __init__(self, parts: list[Any]) -> None:
        feeds = [part for part in parts if isinstance(part, ChangeFeed)]
        super().__init__(feeds[0].source)
        self.feeds = feeds
        self.fixed = [item for part in parts if not isinstance(part, ChangeFeed) for item in part]
        self.notes = [Note.SEQUENCE_FEED]
        if any(Note.INCLUDES_STATES in feed.notes for feed in feeds):
            self.notes.append(Note.INCLUDES_STATES)

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        head = list(self.fixed)
        for feed in self.feeds:
            feed._event = self._event  # a change in any part wakes the union
            feed.start()
            head.extend(feed.first_batch())
        self._head = self._deliver(head, raise_now=True)
        if self.done:
            self.close()

    def subscribe(self) -> None:
        pass  # the parts are subscribed

    def unsubscribe(self) -> None:
        for feed in self.feeds:
            feed.close()

    def has_pending(self) -> bool:
        return any(
            feed._head or feed._skipped or feed.has_pending() or feed._failure or feed._error
            for feed in self.feeds
        )

    def _drain(self) -> list[Any]:
        out, self._head = self._head, []
        for feed in list(self.feeds):
            if feed._error is not None:
                self._failure = ReqlOpFailedError(feed._error)
                break
            if feed._failure is not None:
                self._failure, feed._failure = feed._failure, None
                break
            items = feed._drain()
            if feed.done:
                self.feeds.remove(feed)
            out.extend(self._deliver(items))
            if self.done:
                break
        if self._failure is not None and out:
            return out  # the error goes out with the next batch
        if self._failure is not None:
            failure, self._failure = self._failure, None
            self.done = True
            raise failure
        if not self.feeds and not self.done:
            self.done = True  # every part has ended
        return out

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.unsubscribe()
            self._event.set()
