"""``r.range()`` without bounds: an infinite stream. It can be limited, skipped,
mapped (alone or beside finite sequences) and folded with ``emit``; anything that
needs all of it fails as on the real server, and the ReQL test server refuses to
send one to a client (a real server would stream it for ever: add ``.limit(n)``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count, islice
from typing import Any

from .reql_errors import ReqlQueryLogicError
from .reql_eval import Ctx, Stream, T, as_int, handler

INFINITE_AGGREGATE = (
    "Cannot use an infinite stream with an aggregation function (`reduce`, `count`, etc.) "
    "or coerce it to an array."
)
INFINITE_RESULT = (
    "An infinite stream cannot be sent by the ReQL test server (a real RethinkDB streams "
    "it without end): add `.limit(n)`."
)


def infinite(items: Callable[[], Iterator[Any]]) -> Stream:
    def refuse() -> list:
        raise ReqlQueryLogicError(INFINITE_AGGREGATE)

    stream = Stream(refuse)
    stream.lazy = items
    return stream


def is_infinite(value: Any) -> bool:
    return isinstance(value, Stream) and value.lazy is not None


def take(stream: Stream, n: int) -> Stream:
    assert stream.lazy is not None
    return Stream.of(list(islice(stream.lazy(), n)))


def drop(stream: Stream, n: int) -> Stream:
    items = stream.lazy
    assert items is not None
    return infinite(lambda: islice(items(), n, None))


def lazy_map(fn: Callable[..., Any], sequences: list) -> Stream:
    """map over sequences of which at least one is infinite: infinite when all are,
    else as long as the shortest finite one."""
    finite = [s for s in sequences if not is_infinite(s)]

    def rows() -> Iterator[Any]:
        iterators = [s.lazy() if is_infinite(s) else iter(s) for s in sequences]
        return (fn(*row) for row in zip(*iterators, strict=False))

    if finite:
        return Stream.of(list(rows()))
    return infinite(rows)


@handler(T.RANGE, 0, 2)
def range_(ctx: Ctx, args: list, opts: dict, scope: dict) -> Stream:
    if not args:
        return infinite(count)
    bounds = [as_int(a) for a in args]
    return Stream.of(list(range(*bounds)))
