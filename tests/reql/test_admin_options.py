"""Table administration as the real server checks it (issue 19): table_create's
options, reconfigure/rebalance on a one-server cluster, wait's options."""

from __future__ import annotations

import uuid

import pytest
from rethinkdb.errors import ReqlOpFailedError, ReqlQueryLogicError, ReqlServerCompileError

from ._client import Client, error_message


def _name() -> str:
    return "t_" + uuid.uuid4().hex[:8]


async def test_table_create_options(client: Client) -> None:
    r = client.r
    name = _name()
    result = await client.run(r.table_create(name, durability="soft", shards=2, replicas=1))
    config = result["config_changes"][0]["new_val"]
    assert config["durability"] == "soft" and len(config["shards"]) == 2
    assert (await client.run(r.table(name).config()))["durability"] == "soft"
    bad = r.table_create(_name(), durability="fake")
    message = await error_message(ReqlQueryLogicError, client.run(bad))
    assert message == 'Durability option `fake` unrecognized (options are "hard" and "soft").'
    unknown = r.table_create(_name(), foo="bar")
    message = await error_message(ReqlServerCompileError, client.run(unknown))
    assert message == "Unrecognized optional argument `foo`."
    await client.run(r.table_drop(name))


@pytest.mark.parametrize(
    ("optargs", "error", "message"),
    [
        (
            {"shards": 0, "replicas": 1},
            ReqlQueryLogicError,
            "Every table must have at least one shard.",
        ),
        (
            {"shards": 1, "replicas": {"default": 0}},
            ReqlQueryLogicError,
            "`primary_replica_tag` must be specified when `replicas` is an OBJECT.",
        ),
        (
            {"shards": 1, "replicas": 3, "primary_replica_tag": "foo"},
            ReqlQueryLogicError,
            "`replicas` must be an OBJECT if `primary_replica_tag` is specified.",
        ),
        (
            {"shards": 1, "replicas": {"foo": 0}, "primary_replica_tag": "foo"},
            ReqlOpFailedError,
            "You must set `replicas` to at least one. `replicas` includes the primary replica; "
            "if there are zero replicas, there is nowhere to put the data.",
        ),
        (
            {"emergency_repair": "unsafe_rollback"},
            ReqlOpFailedError,
            "This table doesn't need to be repaired.",
        ),
    ],
)
async def test_reconfigure_checks(
    client: Client, table: str, optargs: dict, error: type[Exception], message: str
) -> None:
    query = client.r.table(table).reconfigure(**optargs)
    assert await error_message(error, client.run(query)) == message


async def test_reconfigure_and_rebalance(client: Client, table: str) -> None:
    r = client.r
    dry = await client.run(r.table(table).reconfigure(shards=2, replicas=1, dry_run=True))
    assert dry["reconfigured"] == 0
    assert len((await client.run(r.table(table).config()))["shards"]) == 1
    done = await client.run(r.table(table).reconfigure(shards=2, replicas=1))
    assert done["reconfigured"] == 1 and len(done["config_changes"][0]["new_val"]["shards"]) == 2
    assert len((await client.run(r.table(table).status()))["shards"]) == 2
    assert (await client.run(r.table(table).rebalance()))["rebalanced"] in (0, 1)


async def test_wait_options(client: Client, table: str) -> None:
    r = client.r
    assert (await client.run(r.table(table).wait(wait_for="all_replicas_ready")))["ready"] == 1
    message = await error_message(
        ReqlQueryLogicError, client.run(r.table(table).wait(wait_for="x"))
    )
    assert message.startswith("Unknown table readiness state: 'x', must be one of")


async def test_unknown_global_optarg(client: Client) -> None:
    query = client.run(client.r.expr(1), obviously_bogus=True)
    message = await error_message(ReqlServerCompileError, query)
    assert message == "Unrecognized global optional argument `obviously_bogus`."


async def test_index_functions_must_be_deterministic(client: Client, table: str) -> None:
    r = client.r
    query = r.table(table).index_create("x", lambda row: r.table(table).get(0))
    message = await error_message(ReqlQueryLogicError, client.run(query))
    assert (
        message == "Could not prove function deterministic.  Index functions must be deterministic."
    )


async def test_grant_on_a_server_whose_only_user_is_admin(client: Client) -> None:
    r = client.r
    message = await error_message(ReqlOpFailedError, client.run(r.grant("admin", {"read": False})))
    assert message == "The permissions of the user `admin` can't be modified."
    message = await error_message(ReqlOpFailedError, client.run(r.grant("h19_nobody", {})))
    assert message == "User `h19_nobody` not found."
    permissions = r.db("rethinkdb").table("permissions").filter({"user": "h19_nobody"})
    assert (await client.run(permissions.delete()))["deleted"] == 0


async def test_jobs_lists_running_queries(client: Client, other: Client, table: str) -> None:
    r = client.r
    jobs = r.db("rethinkdb").table("jobs").filter({"type": "query"})
    assert await client.run(jobs.count()) >= 1  # the query reading it
    feed = await other.feed(r.table(table).changes())
    assert await client.run(jobs.count()) >= 2  # and the open changefeed
    await feed.close()
