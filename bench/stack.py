"""The parts under test, as separate processes: RethinkDB (the ReQL test server,
``CHANGEFLOW_TEST_RETHINKDB``, or a real server started from the binary
``CHANGEFLOW_TEST_RETHINKDB_BIN``), a redis-server, the worker and Daphne.

Started once, on first use, and shared by the scenarios; ``shutdown()`` stops
them. Process output is kept in ``bench/results/*.log``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from channels_redis.core import RedisChannelLayer

from changeflow_channels.pushes import build_push
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.testing.processes import (
    DAPHNE_READY,
    ManagedProcess,
    RedisServer,
    RethinkDBServer,
    free_port,
    start_daphne,
    start_worker,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PUSH_CHANNEL = "changeflow"  # CHANGEFLOW_CHANNEL's default, as bench.settings keeps it
DATABASE = "bench"  # the product scenarios' tables; the worker watches only these


def raise_nofile() -> int:
    """The soft limit of open files raised to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mb(pid: int, field_name: str = "VmRSS") -> float:
    """A process's resident set (``VmRSS``) or its peak (``VmHWM``), in MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field_name} for process {pid}")


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user and system), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Each process's CPU over a measure, as percent of one core: started on
    creation, read by ``percentages`` (a process gone meanwhile is left out)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.started = time.monotonic()

    def percentages(self, prefix: str) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        shares = {}
        for name, pid in self.pids.items():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                used = cpu_seconds(pid) - self.before[name]
                shares[f"{prefix}_cpu_{name}_pct"] = used / elapsed * 100
        return shares


@dataclass
class Stack:
    rethinkdb_url: str
    redis: RedisServer
    env: dict[str, str]
    ws_port: int = 0
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    rethinkdb: RethinkDBServer | None = None  # a real server of the stack's own

    @property
    def connect_kwargs(self) -> dict[str, object]:
        return parse_rethinkdb_url(self.rethinkdb_url).connect_kwargs()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws/changeflow/"

    @property
    def bare_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws/bench/bare/"

    def pid(self, name: str) -> int:
        return self.processes[name].process.pid

    def part_pids(self) -> dict[str, int]:
        """The stack's parts by name: Daphne, the worker, the database, Redis."""
        pids = {name: self.pid(name) for name in ("daphne", "worker")}
        if self.rethinkdb is not None and self.rethinkdb.process is not None:
            pids["rethinkdb"] = self.rethinkdb.process.process.pid
        elif "reql_server" in self.processes:
            pids["rethinkdb"] = self.pid("reql_server")
        if self.redis.process is not None:
            pids["redis"] = self.redis.process.process.pid
        return pids

    def start_worker(self, name: str, *watch: str, timeout: float = 120) -> ManagedProcess:
        """A ``manage.py changeflow -q`` process following ``watch``, once it is ready.

        Quiet, it does not say when it is ready: it is once it answers a push
        (it takes pushes only when its feeds are open)."""
        args = ["-q", *(arg for pattern in watch for arg in ("--watch", pattern))]
        worker = start_worker(*args, env=self.env, cwd=str(REPO))
        self.processes[name] = worker
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, self._answered_push(timeout)).result()
        return worker

    async def _answered_push(self, timeout: float) -> None:
        layer = RedisChannelLayer(hosts=[{"address": self.redis.url, "socket_timeout": None}])
        try:
            reply = await layer.new_channel()
            push = build_push(DATABASE, "ready", {"ready": True}, reply_channel=reply)
            await layer.send(PUSH_CHANNEL, push)
            answer = await asyncio.wait_for(layer.receive(reply), timeout)
            if not answer.get("ok"):
                raise RuntimeError(f"the worker refused a push: {answer}")
        finally:
            await layer.close_pools()

    def stop(self, name: str) -> None:
        process = self.processes.pop(name)
        process.stop()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.log").write_text(process.output + "\n", encoding="utf-8")


_stack: Stack | None = None


def get() -> Stack:
    """The running stack, started on first use."""
    global _stack
    if _stack is None:
        _stack = _start()
        atexit.register(shutdown)
    return _stack


def _start() -> Stack:
    raise_nofile()
    processes: dict[str, ManagedProcess] = {}
    url = os.environ.get("CHANGEFLOW_TEST_RETHINKDB")
    binary = os.environ.get("CHANGEFLOW_TEST_RETHINKDB_BIN")
    rethinkdb: RethinkDBServer | None = None
    if not url and binary:
        rethinkdb = RethinkDBServer(binary)
        try:
            rethinkdb.start()
        except BaseException:
            rethinkdb.close()
            raise
        url = rethinkdb.url
    elif not url:
        reql = ManagedProcess(
            [sys.executable, "-m", "changeflow_channels.testing", "--port", "0"],
            env={"PYTHONUNBUFFERED": "1"},
        )
        processes["reql_server"] = reql
        url = "rethinkdb://admin@" + reql.wait_for(r"(127\.0\.0\.1:\d+)", timeout=30).group(1)
    redis = RedisServer()
    try:
        redis.start()
    except BaseException:
        for process in processes.values():
            process.stop()
        if rethinkdb is not None:
            rethinkdb.close()
        raise
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "CHANGEFLOW_TEST_RETHINKDB_URL": url,
        "CHANGEFLOW_TEST_REDIS_URL": redis.url,
    }
    stack = Stack(url, redis, env, processes=processes, rethinkdb=rethinkdb)
    try:
        stack.start_worker("worker", f"{DATABASE}.*")
        stack.ws_port = free_port()
        daphne = start_daphne("bench.asgi:application", stack.ws_port, env=env, cwd=str(REPO))
        stack.processes["daphne"] = daphne
        daphne.wait_for(DAPHNE_READY, timeout=60)
    except BaseException:
        _stop(stack)  # nothing of a failed start is left running
        raise
    return stack


def shutdown() -> None:
    """Stop every process of the stack (Daphne and workers first)."""
    global _stack
    if _stack is None:
        return
    stack, _stack = _stack, None
    _stop(stack)


def _stop(stack: Stack) -> None:
    for name in [n for n in stack.processes if n != "reql_server"]:
        stack.stop(name)
    stack.redis.stop()
    if "reql_server" in stack.processes:
        stack.stop("reql_server")
    if stack.rethinkdb is not None and stack.rethinkdb.process is not None:
        stack.rethinkdb.stop()
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "rethinkdb.log").write_text(stack.rethinkdb.output + "\n", encoding="utf-8")
    if stack.rethinkdb is not None:
        stack.rethinkdb.close()
