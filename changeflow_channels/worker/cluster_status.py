"""What ``manage.py changeflow status`` reports: workers, their tables, Redis and RethinkDB.

Read from where the truth is: the workers' published state and the leases in
Redis (see ``leases.py``), the tables from RethinkDB. Nothing here asks a worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rethinkdb.errors import ReqlAuthError, ReqlError

from ..conf import ChangeflowSettings
from ..redis_layer import REDIS_ERRORS
from ..rethink import auth_failed, close_quietly, connect, new_driver
from ..rethinkdb_url import parse_rethinkdb_url
from .leases import RedisTarget, read_registry, redis_target
from .watch import WatchPatterns

TIMEOUT = 5.0


async def _timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = await asyncio.wait_for(call, TIMEOUT)
    return result, round((time.perf_counter() - started) * 1000, 2)


async def redis_health(target: RedisTarget) -> dict[str, Any]:
    try:
        _, latency = await _timed(target.redis.ping())
        info = await asyncio.wait_for(target.redis.info("server"), TIMEOUT)
    except REDIS_ERRORS as error:
        return {"ok": False, "address": target.description, "error": repr(error)}
    return {
        "ok": True,
        "address": target.description,
        "latency_ms": latency,
        "version": info.get("redis_version"),
    }


async def rethinkdb_health(settings: ChangeflowSettings) -> tuple[dict[str, Any], list[str]]:
    """Health, and every table (``db.table``) RethinkDB has."""
    address = parse_rethinkdb_url(settings.rethinkdb)
    where = address.where
    r = new_driver()
    conn = None
    try:
        started = time.perf_counter()
        conn = await asyncio.wait_for(connect(r, address), TIMEOUT)
        query = r.db("rethinkdb").table("table_config").pluck("db", "name")
        rows = await asyncio.wait_for(query.run(conn), TIMEOUT)
        if not isinstance(rows, list):
            rows = [row async for row in rows]
        latency = round((time.perf_counter() - started) * 1000, 2)
    except ReqlAuthError:
        error = auth_failed(address)
        return {"ok": False, "address": where, "error": error, "code": "auth_failed"}, []
    except (ReqlError, OSError, asyncio.TimeoutError) as error:
        return {"ok": False, "address": where, "error": repr(error)}, []
    finally:
        await close_quietly(conn)
    tables = sorted(f"{row['db']}.{row['name']}" for row in rows)
    return {"ok": True, "address": where, "latency_ms": latency, "tables": len(tables)}, tables


async def gather(settings: ChangeflowSettings, layer: str = "default") -> dict[str, Any]:
    """The whole picture, JSON-ready; ``ok`` is False when anything needs attention."""
    rethinkdb, tables = await rethinkdb_health(settings)
    target = redis_target(layer, settings.redis, settings.channel)
    status: dict[str, Any] = {
        "ok": False,
        "time": time.time(),
        "channel": settings.channel,
        "lease_time": settings.lease_time,
        "rethinkdb": rethinkdb,
        "redis": None,
        "workers": [],
        "tables": {},
        "problems": [],
    }
    problems: list[str] = status["problems"]
    if not rethinkdb["ok"]:
        problems.append(
            rethinkdb["error"]
            if rethinkdb.get("code") == "auth_failed"
            else f"RethinkDB unreachable at {rethinkdb['address']}"
        )
    if target is None:
        problems.append(
            "the channel layer is not Redis: workers share no state, status cannot see them"
        )
        return status
    try:
        status["redis"] = await redis_health(target)
        if not status["redis"]["ok"]:
            problems.append(f"Redis unreachable at {target.description}")
            return status
        registry = await asyncio.wait_for(read_registry(target), TIMEOUT)
    finally:
        await target.redis.aclose(close_connection_pool=True)
    workers, leases = registry["workers"], registry["leases"]
    now = time.time()
    for worker_id, info in sorted(workers.items(), key=lambda item: item[1].get("started", 0)):
        followed = info.get("tables") or {}
        status["workers"].append(
            {
                "id": worker_id,
                "host": info.get("host"),
                "pid": info.get("pid"),
                "uptime": round(now - info.get("started", now), 1),
                "heartbeat_age": round(now - info.get("at", now), 2),
                "watch": info.get("watch"),
                "tables": {
                    stream: {**state, "lease_ttl_ms": leases.get(stream, {}).get("ttl_ms")}
                    for stream, state in sorted(followed.items())
                },
            }
        )
    if not workers:
        problems.append("no worker alive")
    patterns = {p for info in workers.values() for p in info.get("watch") or []}
    watch = WatchPatterns(sorted(patterns) or settings.watch)
    watched = [s for s in tables if watch.matches(*s.split(".", 1))]
    unfollowed = [s for s in watched if s not in leases]
    orphaned = {s: lease for s, lease in leases.items() if lease["holder"] not in workers}
    status["tables"] = {
        "watched": len(watched),
        "followed": len(watched) - len(unfollowed),
        "unfollowed": unfollowed,
        "held_by_dead_workers": orphaned,
    }
    if rethinkdb["ok"] and unfollowed:
        problems.append(f"{_count(len(unfollowed), 'watched table')} followed by no worker")
    if orphaned:
        problems.append(
            f"{_count(len(orphaned), 'lease')} held by a worker that is gone (they expire)"
        )
    status["ok"] = not problems
    return status


def render(status: dict[str, Any]) -> str:
    """The status for a terminal."""
    lines = []
    rethinkdb, redis = status["rethinkdb"], status["redis"]
    lines.append(_health_line("RethinkDB", rethinkdb, _count(rethinkdb.get("tables"), "table")))
    if redis is not None:
        lines.append(_health_line("Redis", redis, f"version {redis.get('version')}"))
    workers = status["workers"]
    lines.append(
        f"Workers    {len(workers)} alive on {status['channel']!r} "
        f"(lease time {status['lease_time']:g} s)"
    )
    for worker in workers:
        lines.append(
            f"  {worker['id']}  {worker['host']} pid {worker['pid']}  up {worker['uptime']:.0f} s"
            f"  heartbeat {worker['heartbeat_age']:.1f} s ago  {_count(len(worker['tables']), 'table')}"
        )
        for stream, table in worker["tables"].items():
            epoch = (table.get("epoch") or "-")[:8]
            read = table.get("last_read_ago")
            lines.append(
                f"    {stream:<32} epoch {epoch}  seq {table.get('seq')}"
                f"  lag {table.get('pending')} unsent"
                f"  last read {'-' if read is None else f'{read:.1f} s ago'}"
                + ("" if table.get("caught_up") else "  (connecting)")
            )
    tables = status["tables"]
    if tables:
        lines.append(
            f"Tables     {tables['watched']} watched, {tables['followed']} followed"
            + (f", not followed: {', '.join(tables['unfollowed'])}" if tables["unfollowed"] else "")
        )
    for problem in status["problems"]:
        lines.append(f"PROBLEM    {problem}")
    if status["ok"]:
        lines.append("OK")
    return "\n".join(lines)


def _count(number: Any, noun: str) -> str:
    """``1 table``, ``2 tables``, ``? tables`` (unknown)."""
    if number is None:
        return f"? {noun}s"
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _health_line(name: str, health: dict[str, Any], detail: str) -> str:
    if health.get("ok"):
        return f"{name:<10} ok  {health['address']}  {health['latency_ms']} ms  {detail}"
    return f"{name:<10} DOWN  {health['address']}  {health.get('error')}"
