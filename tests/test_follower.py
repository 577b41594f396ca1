"""The one reconnect loop (``rethink.Follower``) and ``rethink.first_of``, without a network:
``rethink.connect`` is replaced by a fake that fails as told."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from rethinkdb.errors import ReqlDriverError

from changeflow_channels import rethink
from changeflow_channels.rethink import Follower, first_of
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url

ADDRESS = parse_rethinkdb_url("rethinkdb://127.0.0.1:1")


class FakeConn:
    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = asyncio.Event()

    async def close(self, noreply_wait: bool = True) -> None:
        self.closed.set()

    async def until_closed(self) -> None:
        """Like a cursor on this connection: waits until it is closed, then raises."""
        await self.closed.wait()
        raise ReqlDriverError("Connection is closed.")


class FakeServer:
    """``connect`` fails ``failures`` times, then hands out FakeConns; ``gate``, when
    given, holds every connect until it is set."""

    def __init__(self, failures: int = 0, gate: asyncio.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.attempts = 0
        self.attempted = asyncio.Event()
        self.conns: list[FakeConn] = []

    async def connect(self, r: Any, address: Any) -> FakeConn:
        self.attempts += 1
        self.attempted.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ReqlDriverError("Could not connect to 127.0.0.1:1.")
        conn = FakeConn(len(self.conns))
        self.conns.append(conn)
        return conn


@pytest.fixture
def server(monkeypatch):
    def make(failures: int = 0, gate: asyncio.Event | None = None) -> FakeServer:
        fake = FakeServer(failures, gate)
        monkeypatch.setattr(rethink, "connect", fake.connect)
        return fake

    return make


def follower(**kwargs: float) -> Follower:
    return Follower(None, ADDRESS, "test follower", **kwargs)


async def test_connect_fails_n_times_then_the_session_runs_with_the_waits_doubled(server, caplog):
    fake = server(failures=4)
    caplog.set_level(logging.WARNING, "changeflow_channels")
    sessions: list[FakeConn] = []

    async def session(conn: FakeConn) -> bool:
        sessions.append(conn)
        return True  # done: the loop ends

    await asyncio.wait_for(follower(delay=0.01, max_delay=0.04).follow(session), 5)
    assert fake.attempts == 5 and [conn.number for conn in sessions] == [0]
    assert sessions[0].closed.is_set()
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        f"test follower: RethinkDB unavailable (Could not connect to 127.0.0.1:1.); "
        f"retrying in {delay} s"
        for delay in ("0.01", "0.02", "0.04", "0.04")
    ]


async def test_the_waits_start_again_after_a_session_that_progressed(server, caplog):
    """A follower that got going (a feed caught up) and then failed waits the first delay
    again: the same outage going on doubles the wait, a new one does not inherit it."""
    server()
    caplog.set_level(logging.WARNING, "changeflow_channels")
    following = follower(delay=0.01, max_delay=0.08)

    async def session(conn: FakeConn) -> bool:
        if conn.number == 3:
            following.progressed()
        if conn.number == 5:
            return True
        raise ReqlDriverError("Connection is closed.")

    await asyncio.wait_for(following.follow(session), 5)
    waits = [record.getMessage().rsplit(" ", 2)[1] for record in caplog.records]
    assert waits == ["0.01", "0.02", "0.04", "0.01", "0.02"]


async def test_a_session_that_is_not_done_runs_again_on_a_new_connection(server):
    fake = server()
    retried: list[int] = []

    async def session(conn: FakeConn) -> bool:
        return conn.number == 2

    await asyncio.wait_for(
        follower(delay=0.01).follow(session, retrying=lambda: retried.append(1)), 5
    )
    assert [conn.closed.is_set() for conn in fake.conns] == [True, True, True]
    assert len(retried) == 2  # before each wait


async def test_a_failure_is_logged_with_its_traceback_and_retried(server, caplog):
    server()
    caplog.set_level(logging.WARNING, "changeflow_channels")

    async def session(conn: FakeConn) -> bool:
        if conn.number == 0:
            raise ValueError("a bug")
        return True

    await asyncio.wait_for(follower(delay=0.01).follow(session), 5)
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "test follower: failed; retrying in 0.01 s"


async def test_stop_while_connecting_ends_the_loop_without_a_session(server, caplog):
    gate = asyncio.Event()
    fake = server(gate=gate)
    caplog.set_level(logging.WARNING, "changeflow_channels")
    following = follower()
    sessions: list[FakeConn] = []

    async def session(conn: FakeConn) -> bool:
        sessions.append(conn)
        return False

    task = asyncio.ensure_future(following.follow(session))
    await asyncio.wait_for(fake.attempted.wait(), 5)
    following.stop()
    gate.set()  # the connection opens after all
    await asyncio.wait_for(task, 5)
    assert sessions == [] and fake.conns[0].closed.is_set()
    assert caplog.records == []


async def test_stop_while_in_session_closes_the_connection_and_logs_nothing(server, caplog):
    fake = server()
    caplog.set_level(logging.WARNING, "changeflow_channels")
    following = follower()
    started = asyncio.Event()

    async def session(conn: FakeConn) -> bool:
        started.set()
        await conn.until_closed()  # a cursor woken by the close
        return False

    task = asyncio.ensure_future(following.follow(session))
    await asyncio.wait_for(started.wait(), 5)
    following.stop()
    await asyncio.wait_for(task, 5)
    assert fake.attempts == 1 and fake.conns[0].closed.is_set()
    assert caplog.records == []


async def test_stop_while_waiting_to_retry_ends_the_wait(server):
    fake = server(failures=100)
    following = follower(delay=60)
    task = asyncio.ensure_future(following.follow(lambda conn: asyncio.sleep(0, True)))
    await asyncio.wait_for(fake.attempted.wait(), 5)
    await asyncio.sleep(0.05)  # in its 60 s wait
    following.stop()
    await asyncio.wait_for(task, 1)
    assert fake.attempts == 1


async def test_until_an_event_unless_stopped():
    following = follower()
    event = asyncio.Event()
    waiting = asyncio.ensure_future(following.until(event))
    event.set()
    assert await asyncio.wait_for(waiting, 1) is True
    other = asyncio.Event()
    waiting = asyncio.ensure_future(following.until(other))
    following.stop()
    assert await asyncio.wait_for(waiting, 1) is False


async def test_first_of_answers_the_first_and_cancels_only_its_own_tasks():
    theirs = asyncio.ensure_future(asyncio.sleep(60))
    mine = asyncio.Event()

    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "answer"

    waits = [mine.wait(), theirs, answer()]
    assert await first_of(*waits) == (2, "answer")
    await asyncio.sleep(0)
    assert not theirs.done()  # the caller's: left running
    assert len(asyncio.all_tasks()) == 2  # this test and ``theirs``: ``mine.wait()`` cancelled
    theirs.cancel()


async def test_first_of_prefers_the_lowest_index_and_raises_its_error():
    done = asyncio.Event()
    done.set()
    assert await first_of(done.wait(), done.wait()) == (0, True)

    async def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await first_of(fail(), asyncio.sleep(60))


async def test_first_of_cancelled_cancels_its_own_tasks():
    event = asyncio.Event()
    waiting = asyncio.ensure_future(first_of(event.wait(), asyncio.sleep(60)))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
