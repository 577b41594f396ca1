"""Sharding and replication settings: ``table_create``'s options, ``reconfigure``
and ``rebalance``, checked as the real server checks them.

The test server is one server with the tag ``default``: a table may have 1 to 64
shards (kept in its config and status) and exactly one replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .reql_datum import pretty, truthy, type_name
from .reql_errors import ReqlOpFailedError, ReqlQueryLogicError
from .reql_eval import Ctx, DbRef, Stream, T, as_int, as_str, handler, literal_type_error
from .reql_store import Table, check_name

DEFAULT_TAG = "default"
MAX_SHARDS = 64
REPLICATION_OPTARGS = ("shards", "replicas", "nonvoting_replica_tags", "primary_replica_tag")


@dataclass
class Replication:
    shards: int = 1
    replicas: dict[str, int] = field(default_factory=lambda: {DEFAULT_TAG: 1})
    primary_tag: str = DEFAULT_TAG
    nonvoting: list[str] = field(default_factory=list)


def _shards(value: Any) -> int:
    shards = as_int(value)
    if shards <= 0:
        raise ReqlQueryLogicError("Every table must have at least one shard.")
    return shards


def parse_replication(opts: dict, *, required: bool = False) -> Replication:
    """The replication optargs, with the real server's argument errors."""
    params = Replication()
    if required and "shards" not in opts:
        raise ReqlQueryLogicError("Missing required argument `shards`.")
    if "shards" in opts:
        params.shards = _shards(opts["shards"])
    if required and "replicas" not in opts:
        raise ReqlQueryLogicError("Missing required argument `replicas`.")
    primary = opts.get("primary_replica_tag")
    nonvoting = opts.get("nonvoting_replica_tags")
    if "replicas" in opts:
        replicas = opts["replicas"]
        if isinstance(replicas, dict):
            if "primary_replica_tag" not in opts:
                raise ReqlQueryLogicError(
                    "`primary_replica_tag` must be specified when `replicas` is an OBJECT."
                )
            params.replicas = {}
            for tag, count in replicas.items():
                check_name(tag, "Server tag")
                number = as_int(count)
                if number < 0:
                    raise ReqlQueryLogicError("Can't have a negative number of replicas")
                params.replicas[tag] = number
        elif isinstance(replicas, (int, float)) and not isinstance(replicas, bool):
            if "primary_replica_tag" in opts:
                raise ReqlQueryLogicError(
                    "`replicas` must be an OBJECT if `primary_replica_tag` is specified."
                )
            if "nonvoting_replica_tags" in opts:
                raise ReqlQueryLogicError(
                    "`replicas` must be an OBJECT if `nonvoting_replica_tags` is specified."
                )
            params.replicas = {DEFAULT_TAG: as_int(replicas)}
        else:
            raise ReqlQueryLogicError(
                f"Expected type OBJECT or NUMBER but found {type_name(replicas)}:\n"
                f"{pretty(replicas)}"
            )
    if nonvoting is not None:
        if not isinstance(nonvoting, list):
            raise literal_type_error(nonvoting, "ARRAY")
        for tag in nonvoting:
            if not isinstance(tag, str):
                raise ReqlQueryLogicError(
                    f"Expected type STRING but found {type_name(tag)}:\n{pretty(tag)}"
                )
            check_name(tag, "Server tag")
        params.nonvoting = list(nonvoting)
    if primary is not None:
        params.primary_tag = as_str(primary)
        check_name(params.primary_tag, "Server tag")
    return params


def validate_replication(params: Replication) -> None:
    """What the cluster refuses (ReqlOpFailedError), on a one-server cluster."""
    if sum(params.replicas.values()) == 0:
        raise ReqlOpFailedError(
            "You must set `replicas` to at least one. `replicas` includes the primary "
            "replica; if there are zero replicas, there is nowhere to put the data."
        )
    if params.shards > MAX_SHARDS:
        raise ReqlOpFailedError(f"Maximum number of shards is {MAX_SHARDS}.")
    tag = params.primary_tag
    if params.replicas.get(tag, 0) == 0:
        raise ReqlOpFailedError(
            f"Can't use server tag `{tag}` for primary replicas because you specified "
            f"no replicas in server tag `{tag}`."
        )
    for tag in params.nonvoting:
        if tag not in params.replicas:
            raise ReqlOpFailedError(
                f"You specified that the replicas in server tag `{tag}` should be "
                f"non-voting, but you didn't specify a number of replicas in server tag `{tag}`."
            )
    for tag, count in params.replicas.items():
        if count and tag != DEFAULT_TAG:
            raise ReqlOpFailedError(f"Could not find any servers with server tag `{tag}`.")
    count = params.replicas.get(DEFAULT_TAG, 0)
    if count > 1:
        raise ReqlOpFailedError(
            f"Can't put {count} replicas on servers with the tag `{DEFAULT_TAG}` because "
            f"there are only 1 servers with the tag `{DEFAULT_TAG}`. It's impossible to "
            "have more replicas of the data than there are servers."
        )


def _tables(ctx: Ctx, args: list, term: str) -> tuple[list[Table], bool]:
    """The tables a reconfigure/rebalance applies to, and whether it was a database."""
    if not args:
        raise ReqlQueryLogicError(f"`{term}` can only be called on a table or database.")
    target = args[0]
    if isinstance(target, DbRef):
        if target.name == "rethinkdb":
            raise ReqlOpFailedError("Database `rethinkdb` is special; you can't configure it.")
        database = ctx.store.db(target.name)
        return [database.tables[name] for name in sorted(database.tables)], True
    if isinstance(target, Stream) and target.kind == "TABLE" and target.table is not None:
        if not isinstance(target.table, Table):
            raise ReqlOpFailedError(
                f"Database `rethinkdb` is special; you can't {term} system tables."
            )
        return [target.table], False
    raise literal_type_error(target, "TABLE")


def _set_shards(table: Table, shards: int) -> Callable[[], None]:
    def change() -> None:
        table.shards = shards

    return change


REPAIR_MODES = ("unsafe_rollback", "unsafe_rollback_or_erase", "_debug_recommit")


@handler(T.RECONFIGURE, 0, 1, optargs=(*REPLICATION_OPTARGS, "dry_run", "emergency_repair"))
def reconfigure(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    tables, is_db = _tables(ctx, args, "reconfigure")
    dry_run = truthy(opts["dry_run"]) if "dry_run" in opts else False
    repair = opts.get("emergency_repair")
    if repair is not None:
        if as_str(repair) not in REPAIR_MODES:
            raise ReqlQueryLogicError(
                '`emergency_repair` should be "unsafe_rollback" or "unsafe_rollback_or_erase"'
            )
        if any(name in opts for name in REPLICATION_OPTARGS):
            raise ReqlQueryLogicError(
                "In emergency repair mode, you can't specify shards, replicas, etc."
            )
        if is_db:
            raise ReqlQueryLogicError(
                "Can't emergency repair an entire database at once; instead you should run "
                "`reconfigure()` on each table individually."
            )
        raise ReqlOpFailedError("This table doesn't need to be repaired.")
    params = parse_replication(opts, required=True)
    validate_replication(params)
    config_changes, status_changes = [], []
    for table in tables:
        old_config, old_status = table.config_row(), table.status_row()
        if not dry_run:
            ctx.store.change_config(table, _set_shards(table, params.shards))
            config_changes.append({"old_val": old_config, "new_val": table.config_row()})
            status_changes.append({"old_val": old_status, "new_val": table.status_row()})
        else:
            new_config = dict(old_config, shards=old_config["shards"][:1] * params.shards)
            config_changes.append({"old_val": old_config, "new_val": new_config})
    if dry_run:
        return {"reconfigured": 0, "config_changes": config_changes}
    return {
        "reconfigured": len(tables),
        "config_changes": config_changes,
        "status_changes": status_changes,
    }


@handler(T.REBALANCE, 0, 1, optargs=())
def rebalance(ctx: Ctx, args: list, opts: dict, scope: dict) -> dict:
    tables, _ = _tables(ctx, args, "rebalance")
    changes = [{"old_val": t.status_row(), "new_val": t.status_row()} for t in tables]
    return {"rebalanced": len(tables), "status_changes": changes}
