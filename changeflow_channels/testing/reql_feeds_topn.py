"""Top-n changefeeds: ``table.order_by(index=...).limit(n).changes()``.

The feed knows the n first documents in index order (what the client was last
told) and, after each write that may touch them, sends the difference: a document
that left the top n paired with one that entered it (``old_val``/``new_val``), a
changed member as its old and new versions. With ``squash`` the difference is
taken when the squashed changes go out, so passing states are never sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .reql_datum import reql_eq, sort_key
from .reql_feeds import ChangeFeed, Pair
from .reql_store import Table


class TopNFeed(ChangeFeed):
    def __init__(
        self, table: Table, index: str, descending: bool, count: int, **common: Any
    ) -> None:
        super().__init__(table, **common)
        self.table = table
        self.index = index
        self.descending = descending
        self.count = count
        self._known: dict[tuple, Any] = {}  # primary key -> document, in order
        self._dirty = False

    def _top(self) -> dict[tuple, Any]:
        """The first ``count`` documents in index order (ties by primary key)."""
        table, pk = self.table, self.table.primary_key
        if self.index == pk:
            docs = table.scan()
            if self.descending:
                docs = docs[::-1]
        else:
            index = table.indexes.get(self.index)
            if index is None:  # dropped since: nothing is ordered by it any more
                return {}
            docs = []
            for _key, (_value, pks) in sorted(index.entries.items(), reverse=self.descending):
                docs.extend(table.docs[p] for p in sorted(pks, reverse=self.descending))
        top: dict[tuple, Any] = {}
        for doc in docs:
            if len(top) >= self.count:
                break
            key = sort_key(doc.get(pk))
            if key not in top:
                # The selection's transforms (between's bounds, filter, map) apply first.
                value = self._transform(doc) if self.steps else doc
                if value is not None:
                    top[key] = value
        return top

    def initial_values(self) -> list[Any]:
        return list(self._known.values())

    def start(self) -> None:
        if not self._started:
            self._known = self._top()
        super().start()

    def push(self, old: Any, new: Any) -> None:
        if self.done or self._closed:
            return
        pk = self.table.primary_key
        if new is None and sort_key(old.get(pk)) not in self._known:
            return  # a deleted document outside the top n changes nothing
        if self.squash is False:
            pairs = self._diff()
            for pair in pairs:
                self.queue_pair(pair)
            return
        self._dirty = True
        if self.squash is not True and self._due is None and self.squash > 0:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + float(self.squash)
            loop.call_later(float(self.squash), self._event.set)
        else:
            self._event.set()

    def _diff(self) -> list[Pair]:
        """What changed in the top n since the client was last told, as
        (old, new, old_offset, new_offset): a changed member, then a document that
        left paired with one that entered."""
        top = self._top()
        known = self._known
        self._known = top
        old_at = {key: i for i, key in enumerate(known)}
        new_at = {key: i for i, key in enumerate(top)}
        pairs: list[Pair] = [
            (known[key], doc, old_at[key], new_at[key])
            for key, doc in top.items()
            if key in known and not reql_eq(known[key], doc)
        ]
        removed = [key for key in known if key not in top]
        added = [key for key in top if key not in known]
        for i in range(max(len(removed), len(added))):
            gone = removed[i] if i < len(removed) else None
            came = added[i] if i < len(added) else None
            pairs.append(
                (
                    None if gone is None else known[gone],
                    None if came is None else top[came],
                    None if gone is None else old_at[gone],
                    None if came is None else new_at[came],
                )
            )
        return pairs

    def take_pending(self) -> list[Pair]:
        if self.squash is False:
            return super().take_pending()
        if not self._dirty:
            return []
        if self._due is not None and asyncio.get_running_loop().time() < self._due:
            return []
        self._due = None
        self._dirty = False
        return self._diff()

    def has_pending(self) -> bool:
        return self._dirty or super().has_pending()
