"""The records of pushes with an idempotency key when their table loses its primary
replica (a RethinkDB cluster, issue 18): the write is tried again, not answered as an
internal error."""

from __future__ import annotations

import time
from typing import Any

import pytest
from rethinkdb.errors import ReqlInternalError, ReqlOpIndeterminateError, ReqlQueryLogicError

from changeflow_channels.worker.idempotency import RecordsUnavailable, with_records


class Conn:
    def is_open(self) -> bool:
        return True


class Connection:
    def __init__(self) -> None:
        self.discarded = 0

    async def get(self) -> Conn:
        return Conn()

    async def discard(self) -> None:
        self.discarded += 1


class Writer:
    deadline = 5.0

    def __init__(self) -> None:
        self.connection = Connection()


def failing(*errors: Exception) -> Any:
    """``work``: raises ``errors`` one after the other, then answers ``"held"``."""
    left = list(errors)

    async def work(conn: Any) -> str:
        if left:
            raise left.pop(0)
        return "held"

    return work


@pytest.mark.parametrize(
    "error",
    [
        ReqlOpIndeterminateError("Cannot perform write: lost contact with primary replica"),
        ReqlInternalError("none of the servers were accessible"),
    ],
)
async def test_a_record_cut_off_by_a_lost_primary_is_written_again(error):
    writer = Writer()
    held = await with_records(writer, time.monotonic() + 5, failing(error, error))
    assert held == "held"
    assert writer.connection.discarded == 0  # the connection itself is fine


async def test_it_gives_up_at_the_deadline():
    errors = [ReqlOpIndeterminateError("lost contact with primary replica") for _ in range(50)]
    with pytest.raises(RecordsUnavailable, match="ReqlOpIndeterminateError"):
        await with_records(Writer(), time.monotonic() + 0.3, failing(*errors))


async def test_a_query_error_is_not_tried_again():
    with pytest.raises(ReqlQueryLogicError):
        await with_records(Writer(), time.monotonic() + 5, failing(ReqlQueryLogicError("bad")))
