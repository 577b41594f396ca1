"""Fixtures of the fault matrix: one stack of real processes for the whole run, and
scenarios on it (see stack.py and scenario.py). Every test module here is marked slow."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from changeflow_channels.testing.processes import RedisServer

from .scenario import Scenario
from .stack import REPO, FaultStack, own_rethinkdb


@pytest.fixture(scope="session")
def fault_stack() -> Iterator[FaultStack]:
    """Redis, RethinkDB, a worker and a Daphne of the matrix's own, for the whole run."""
    env = {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "PYTHONFAULTHANDLER": "1",
        "CHANGEFLOW_TEST_PERMISSIONS": "tests.policies.TestPolicy",
    }
    with own_rethinkdb() as rethinkdb, RedisServer.running() as redis:
        stack = FaultStack(env, rethinkdb, redis)
        try:
            stack.start()
            yield stack
        finally:
            stack.stop()


@pytest.fixture
async def scenario(fault_stack: FaultStack) -> AsyncIterator[Callable[[str, str], Scenario]]:
    """``scenario(name, load)``: a Scenario on the shared stack, closed afterwards; the
    stack is put back as it was (thawed, one worker, a Daphne) for the next one."""
    made: list[Scenario] = []

    def make(name: str, load: str) -> Scenario:
        made.append(Scenario(fault_stack, name, load))
        return made[-1]

    yield make
    for each in made:
        await each.close()
    fault_stack.rethinkdb.thaw()
    fault_stack.thaw_redis()
    for worker in [w for w in fault_stack.workers if w.process.poll() is not None]:
        fault_stack.kill_worker(worker)  # died during the scenario: its output is kept
    for port in [p for p, d in fault_stack.daphnes.items() if d.process.poll() is not None]:
        fault_stack.kill_daphne(port)
    fault_stack.stop_workers_beyond(1)
    if not fault_stack.workers:
        fault_stack.start_workers(1)
    if not fault_stack.daphnes:
        fault_stack.start_daphne()
