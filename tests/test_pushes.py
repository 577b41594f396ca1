"""Push validation and the push helpers: bad pushes never leave the process."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer

from changeflow_channels import PushError, apush_to_flow, push_to_flow
from changeflow_channels.jsonsafe import json_safe
from changeflow_channels.pushes import parse_push
from changeflow_channels.rethinkdb_url import parse_rethinkdb_url
from changeflow_channels.worker.watch import WatchPatterns


@pytest.mark.parametrize(
    ("args", "options", "error"),
    [
        (("bad name", "t", {}), {}, "database name 'bad name' is invalid"),
        (("db", "", {}), {}, "table name must be a non-empty string"),
        (("d" * 60, "t" * 60, {}), {}, "too long"),
        (("db", "t", "text"), {}, "data must be an object"),
        (("db", "t", {"when": object()}), {}, "data.when is a object"),
        (("db", "t", {"x": float("nan")}), {}, "JSON cannot carry"),
        (("db", "t", {}), {"op": "merge"}, "unknown op"),
        (("db", "t", None), {"op": "replace"}, "replace needs a key"),
        (("db", "t", None), {"op": "delete"}, "delete needs a key"),
        (("db", "t", {"a": 1}), {"op": "update", "key": {"no": "dicts"}}, "key must be"),
        (("db", "t", {}), {"idempotency_key": 7}, "idempotency_key must be a non-empty string"),
        (("db", "t", {}), {"idempotency_key": ""}, "idempotency_key must be a non-empty string"),
        (("db", "t", {}), {"idempotency_key": "k" * 129}, "129 characters long; at most 128"),
        (("db", "t", {}), {"idempotency_key": "\ud800"}, "idempotency_key is not valid Unicode"),
        (("db", "t", {}), {"idempotency_key": "k", "retries": 2}, "retries needs"),
        (("db", "t", {}), {"retries": 2, "wait": True}, "retries needs an idempotency_key"),
        (("db", "t", {}), {"retries": -1}, "retries must be an integer"),
        (("changeflow_internal", "push_keys", {}), {}, "changeflow's own"),
    ],
)
async def test_apush_to_flow_refuses_bad_pushes_before_sending(args, options, error):
    layer = InMemoryChannelLayer()
    with pytest.raises(PushError, match=error):
        await apush_to_flow(*args, channel_layer=layer, **options)
    assert layer.channels == {}


async def test_apush_to_flow_sends_the_design_message():
    layer = InMemoryChannelLayer()
    await apush_to_flow("testdb", "testtable", {"message": "Hello world"}, channel_layer=layer)
    message = await layer.receive("changeflow")
    assert message == {
        "type": "changeflow.push",
        "database": "testdb",
        "table": "testtable",
        "data": {"message": "Hello world"},
    }


def test_push_to_flow_is_the_sync_twin():
    layer = InMemoryChannelLayer()
    push_to_flow("testdb", "testtable", [{"a": 1}], op="upsert", id=3, channel_layer=layer)
    message = async_to_sync(layer.receive)("changeflow")
    assert message == {
        "type": "changeflow.push",
        "database": "testdb",
        "table": "testtable",
        "data": [{"a": 1}],
        "op": "upsert",
        "id": 3,
    }


def test_an_idempotency_key_travels_in_the_message():
    layer = InMemoryChannelLayer()
    key = "é" * 128  # characters, not bytes
    push_to_flow("testdb", "t", {"a": 1}, idempotency_key=key, channel_layer=layer)
    message = async_to_sync(layer.receive)("changeflow")
    assert message["idempotency_key"] == key
    assert parse_push(message).idempotency_key == key
    assert parse_push({"database": "d", "table": "t", "data": {}}).idempotency_key is None


@pytest.mark.parametrize("key", [7, "", "k" * 129, ["k"], "\udfff"])
def test_a_push_with_a_bad_idempotency_key_is_invalid(key):
    with pytest.raises(PushError, match="idempotency_key"):
        parse_push({"database": "d", "table": "t", "data": {}, "idempotency_key": key})


def test_parse_push_defaults():
    request = parse_push({"database": "d", "table": "t", "data": {"a": 1}})
    assert (request.op, request.key, request.documents, request.stream) == (
        "insert",
        None,
        [{"a": 1}],
        "d.t",
    )


def test_json_safe_turns_pseudo_types_into_strings():
    value = {
        "when": {"$reql_type$": "TIME", "epoch_time": 0.5, "timezone": "-02:30"},
        "blob": {"$reql_type$": "BINARY", "data": "aGk="},
        "list": [{"$reql_type$": "TIME", "epoch_time": 0, "timezone": "+00:00"}],
    }
    assert json_safe(value) == {
        "when": "1969-12-31T21:30:00.500000-02:30",
        "blob": "aGk=",
        "list": ["1970-01-01T00:00:00+00:00"],
    }


def test_watch_patterns():
    patterns = WatchPatterns(["shop.*", "blog.posts"])
    assert patterns.matches("shop", "orders")
    assert patterns.matches("blog", "posts")
    assert not patterns.matches("blog", "drafts")
    assert not WatchPatterns(["*"]).matches("rethinkdb", "table_config")
    assert not WatchPatterns(["*"]).matches("changeflow_internal", "push_keys")


def test_rethinkdb_url():
    address = parse_rethinkdb_url("rethinkdbs://me:s%40cret@db.example:29015/app")
    assert (
        address.host,
        address.port,
        address.user,
        address.password,
        address.db,
        address.tls,
    ) == (
        "db.example",
        29015,
        "me",
        "s@cret",
        "app",
        True,
    )
    assert parse_rethinkdb_url("rethinkdb://localhost").connect_kwargs() == {
        "host": "localhost",
        "port": 28015,
        "user": "admin",
        "password": "",
    }
