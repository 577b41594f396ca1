"""Many tables: the RSS of a worker following N tables and its time from start to
ready (its ``changeflow worker ready`` line), with the connections it holds to
RethinkDB.

    python -m bench.tables --tables 1000 [--real /path/to/rethinkdb] [--repo PATH ...]

The server (the ReQL test server, or a real one from ``--real``) and the tables
are made once; then a worker of each ``--repo`` checkout (default: this one) is
started, measured and stopped in turn, so that an older commit
(``git worktree add``) is measured against the same tables in the same run.
Prints one JSON object per worker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rethinkdb import RethinkDB

from changeflow_channels.testing.processes import (
    WORKER_READY,
    ManagedProcess,
    RedisServer,
    RethinkDBServer,
    established_connections,
)

from .stack import raise_nofile, rss_mb

REPO = Path(__file__).resolve().parents[1]
DATABASE = "bench_tables"
SETTINGS = "bench.tables_settings"
NOT_READY = r"feeds were not all open"
CREATE_AT_ONCE = 50


@contextlib.contextmanager
def rethinkdb_server(binary: str | None) -> Iterator[tuple[str, int]]:
    """(host, port) of a server running until the block ends."""
    if binary:
        with RethinkDBServer.running(binary) as server:
            yield server.host, server.port
        return
    reql = ManagedProcess(
        [sys.executable, "-m", "changeflow_channels.testing", "--port", "0"],
        env={"PYTHONUNBUFFERED": "1"},
    )
    try:
        host, port = reql.wait_for(r"(127\.0\.0\.1):(\d+)", timeout=30).groups()
        yield host, int(port)
    finally:
        reql.stop()


async def create_tables(host: str, port: int, count: int) -> None:
    r = RethinkDB()
    r.set_loop_type("asyncio")
    conn = await r.connect(host=host, port=port)
    try:
        if DATABASE not in await r.db_list().run(conn):
            await r.db_create(DATABASE).run(conn)
        existing = set(await r.db(DATABASE).table_list().run(conn))
        names = [f"t{n}" for n in range(count) if f"t{n}" not in existing]
        for start in range(0, len(names), CREATE_AT_ONCE):
            batch = names[start : start + CREATE_AT_ONCE]
            await asyncio.gather(*(r.db(DATABASE).table_create(n).run(conn) for n in batch))
        await r.db(DATABASE).wait().run(conn)
    finally:
        await conn.close(noreply_wait=False)


def measure(
    repo: Path, env: dict[str, str], port: int, timeout: float, tables: int = 0
) -> dict[str, Any]:
    """Start a worker of ``repo`` watching the tables; its figures once ready."""
    settings = repo / "bench" / "tables_settings.py"
    if not settings.exists():  # an older checkout: the same settings
        shutil.copy(REPO / "bench" / "tables_settings.py", settings)
    before = established_connections(port)
    started = time.monotonic()
    worker = ManagedProcess(
        [sys.executable, "-m", "django", "changeflow", "--watch", f"{DATABASE}.*"],
        env={**env, "PYTHONPATH": str(repo), "DJANGO_SETTINGS_MODULE": SETTINGS},
        cwd=str(repo),
    )
    try:
        line = worker.wait_for(f"{WORKER_READY}|{NOT_READY}", timeout=timeout).group(0)
        within_timeout = line != NOT_READY
        if not within_timeout:
            # Since issue 17 the worker also says when its feeds are all open after all.
            with contextlib.suppress(TimeoutError):
                left = timeout - (time.monotonic() - started)
                line = worker.wait_for(WORKER_READY, timeout=max(left, 0.1)).group(0)
        ready_s = time.monotonic() - started
        connected_s = None
        if line == NOT_READY and tables:
            # Not ready within the worker's 30 s: for a worker with a connection per
            # table (before issue 17), when it holds one for every table (polled:
            # nothing announces it).
            while established_connections(port) - before < tables:
                if time.monotonic() - started > timeout:
                    break
                time.sleep(0.2)
            else:
                connected_s = round(time.monotonic() - started, 2)
        time.sleep(2.0)  # the figures a moment after ready, not a wait for an event
        pid = worker.process.pid
        return {
            "repo": str(repo),
            "ready": line != NOT_READY,
            "ready_within_worker_timeout": within_timeout,  # READY_TIMEOUT, 30 s
            "ready_s": round(ready_s, 2),
            "all_connected_s": connected_s,
            "rss_mb": round(rss_mb(pid), 1),
            "peak_rss_mb": round(rss_mb(pid, "VmHWM"), 1),
            "rethinkdb_connections": established_connections(port) - before,
        }
    finally:
        worker.stop(timeout=30)
        log = os.environ.get("BENCH_TABLES_WORKER_LOG")
        if log:  # the worker's output (its warnings), for a run that needs reading
            Path(log).write_text(worker.output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--real", help="a rethinkdb binary (default: the ReQL test server)")
    parser.add_argument("--repo", action="append", help="checkouts to measure (default: this)")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    raise_nofile()
    repos = [Path(p).resolve() for p in (args.repo or [str(REPO)])]
    redis = RedisServer()
    redis.start()
    try:
        with rethinkdb_server(args.real) as (host, port):
            created = time.monotonic()
            asyncio.run(create_tables(host, port, args.tables))
            created_s = time.monotonic() - created
            env = {
                "PYTHONUNBUFFERED": "1",
                "CHANGEFLOW_TEST_RETHINKDB_URL": f"rethinkdb://admin@{host}:{port}",
                "CHANGEFLOW_TEST_REDIS_URL": redis.url,
            }
            for repo in repos:
                figures = measure(repo, env, port, args.timeout, args.tables)
                figures.update(
                    tables=args.tables,
                    server="real" if args.real else "test",
                    tables_created_s=round(created_s, 1),
                )
                sys.stdout.write(json.dumps(figures) + "\n")
                sys.stdout.flush()
    finally:
        redis.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
