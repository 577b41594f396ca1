"""The global optargs (``run(..., name=value)``) the real server accepts; any other
is a compile error, before the query runs."""

from __future__ import annotations

from typing import Any

from .reql_errors import ReqlCompileError

# RethinkDB 2.4's src/rdb_protocol/optargs.cc (`use_outdated` is accepted there only
# to be refused by `table`).
GLOBAL_OPTARGS = frozenset(
    """
    _EVAL_FLAGS_ _NO_RECURSE_ _SHORTCUT_ array_limit attempts auth base binary_format
    changefeed_queue_size conflict data db default default_timezone dry_run durability
    emergency_repair emit fill final_emit first_batch_scaledown_factor float geo geo_system
    group_format header identifier_format ignore_write_hook include_initial include_offsets
    include_states include_types index interleave ordered left_bound max_batch_bytes
    max_batch_rows max_batch_seconds max_dist max_results method min_batch_rows multi
    non_atomic nonvoting_replica_tags noreply num_vertices overwrite page page_limit params
    primary_key primary_replica_tag profile read_mode redirects replicas result_format
    return_changes return_vals right_bound shards squash time_format timeout unit
    use_outdated verify wait_for
    """.split()
)


def check_global_optargs(optargs: dict[str, Any]) -> None:
    for name in optargs:
        if name not in GLOBAL_OPTARGS:
            raise ReqlCompileError(f"Unrecognized global optional argument `{name}`.")
