"""CHANGEFLOW_TABLES: parsing into typed objects, and ``manage.py check`` on bad entries."""

from __future__ import annotations

import pytest
from django.core.checks import Error
from django.test import override_settings

from changeflow_channels.checks import check_settings
from changeflow_channels.tables.config import (
    IndexSpec,
    Retention,
    TableConfigError,
    parse_tables,
)

TABLE_IDS = {f"changeflow_channels.E01{n}" for n in range(8)}  # TABLES, CLEAN_EVERY


def check_tables():
    return [m for m in check_settings() if m.id in TABLE_IDS]


GOOD = {
    "testdb.testtable": {
        "primary_key": "uid",
        "indexes": ["created", ["by_user_and_day", ["user", "day"]]],
        "retention": {"field": "created", "max_age": 86400},
    },
    "testdb.log": {"retention": {"field": "at", "max_rows": 1000}},
    "testdb.plain": {},
    "testdb.replicated": {"replicas": 3, "shards": 2},
}


def test_a_good_setting_parses_into_typed_objects():
    tables = parse_tables(GOOD)
    config = tables[("testdb", "testtable")]
    assert config.stream == "testdb.testtable"
    assert config.primary_key == "uid"
    assert config.indexes == (
        IndexSpec("created", ("created",)),
        IndexSpec("by_user_and_day", ("user", "day"), compound=True),
    )
    assert config.retention == Retention("created", max_age=86400.0)
    assert config.simple_index("created") is not None
    assert config.simple_index("by_user_and_day") is None
    log = tables[("testdb", "log")]
    assert log.primary_key == "id" and log.indexes == ()
    assert log.retention == Retention("at", max_rows=1000)
    assert tables[("testdb", "plain")].retention is None
    assert (log.replicas, log.shards) == (1, 1)
    replicated = tables[("testdb", "replicated")]
    assert (replicated.replicas, replicated.shards) == (3, 2)


def test_a_good_setting_passes_the_checks():
    with override_settings(CHANGEFLOW_TABLES=GOOD):
        assert check_tables() == []


def test_a_bad_setting_raises_a_clear_value_error():
    with pytest.raises(ValueError, match=r"testdb.t: unknown key\(s\) 'primary'"):
        parse_tables({"testdb.t": {"primary": "uid"}})


BAD = [
    ("not a dict", ["db.t"], "E010", "must be a dict"),
    ("bad stream name", {"db.bad name": {}}, "E010", "is invalid"),
    ("no table in the stream", {"nodot": {}}, "E010", "must be"),
    ("entry not a dict", {"db.t": "uid"}, "E011", "must be a dict"),
    ("unknown key", {"db.t": {"pk": "uid"}}, "E011", "unknown key(s) 'pk'"),
    (
        "unknown retention key",
        {"db.t": {"retention": {"field": "a", "max_age": 1, "x": 1}}},
        "E011",
        "'x'",
    ),
    ("primary key not a string", {"db.t": {"primary_key": 3}}, "E012", "primary_key"),
    ("primary key nested", {"db.t": {"primary_key": "a.b"}}, "E012", "primary_key"),
    ("indexes not a list", {"db.t": {"indexes": "created"}}, "E013", "indexes must be a list"),
    ("index name with a space", {"db.t": {"indexes": ["a b"]}}, "E013", "index 'a b'"),
    ("index of a number", {"db.t": {"indexes": [3]}}, "E013", "expected a name"),
    ("compound without fields", {"db.t": {"indexes": [["c", []]]}}, "E013", "non-empty list"),
    ("compound fields not a list", {"db.t": {"indexes": [["c", "a"]]}}, "E013", "expected a name"),
    ("compound of three", {"db.t": {"indexes": [["c", ["a"], "x"]]}}, "E013", "expected a name"),
    ("index twice", {"db.t": {"indexes": ["a", "a"]}}, "E013", "listed twice"),
    ("index named as the pk", {"db.t": {"indexes": ["id"]}}, "E013", "primary key"),
    ("retention not a dict", {"db.t": {"retention": 86400}}, "E014", "must be a dict"),
    ("retention without field", {"db.t": {"retention": {"max_age": 60}}}, "E014", "needs a field"),
    ("neither", {"db.t": {"retention": {"field": "a"}}}, "E014", "not neither"),
    (
        "both",
        {"db.t": {"retention": {"field": "a", "max_age": 1, "max_rows": 1}}},
        "E014",
        "not both",
    ),
    ("zero age", {"db.t": {"retention": {"field": "a", "max_age": 0}}}, "E014", "max_age must be"),
    (
        "negative rows",
        {"db.t": {"retention": {"field": "a", "max_rows": -5}}},
        "E014",
        "max_rows must be",
    ),
    (
        "fractional rows",
        {"db.t": {"retention": {"field": "a", "max_rows": 1.5}}},
        "E014",
        "max_rows must be",
    ),
    (
        "age as text",
        {"db.t": {"retention": {"field": "a", "max_age": "1d"}}},
        "E014",
        "max_age must be",
    ),
    (
        "infinite age",
        {"db.t": {"retention": {"field": "a", "max_age": float("inf")}}},
        "E014",
        "max_age must be",
    ),
    (
        "age as bool",
        {"db.t": {"retention": {"field": "a", "max_age": True}}},
        "E014",
        "max_age must be",
    ),
    (
        "field nested",
        {"db.t": {"retention": {"field": "a.b", "max_age": 1}}},
        "E015",
        "neither an index nor a plain field",
    ),
    (
        "field not a string",
        {"db.t": {"retention": {"field": ["a"], "max_age": 1}}},
        "E015",
        "neither an index",
    ),
    (
        "field is a compound index",
        {"db.t": {"indexes": [["c", ["a", "b"]]], "retention": {"field": "c", "max_age": 1}}},
        "E015",
        "compound index",
    ),
    ("no replicas", {"db.t": {"replicas": 0}}, "E017", "replicas must be a positive integer"),
    ("replicas as text", {"db.t": {"replicas": "3"}}, "E017", "replicas must be"),
    ("replicas as bool", {"db.t": {"replicas": True}}, "E017", "replicas must be"),
    ("replicas as float", {"db.t": {"replicas": 3.0}}, "E017", "replicas must be"),
    ("negative shards", {"db.t": {"shards": -1}}, "E017", "shards must be a positive integer"),
    ("too many shards", {"db.t": {"shards": 65}}, "E017", "of at most 64"),
]


@pytest.mark.parametrize(
    ("setting", "check_id", "text"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_the_checks_flag_each_bad_entry(setting, check_id, text):
    with override_settings(CHANGEFLOW_TABLES=setting):
        messages = check_tables()
    matching = [m for m in messages if m.id == f"changeflow_channels.{check_id}"]
    assert matching, messages
    assert any(text in m.msg for m in matching), [m.msg for m in matching]
    assert all(isinstance(m, Error) and m.hint for m in messages)
    with pytest.raises(TableConfigError):
        parse_tables(setting)


def test_every_problem_is_reported_not_just_the_first():
    setting = {
        "db.a": {"primary_key": 1, "indexes": [3]},
        "db.b": {"retention": {"max_rows": 0}},
    }
    with override_settings(CHANGEFLOW_TABLES=setting):
        found = sorted(m.id.rsplit(".", 1)[1] for m in check_tables())
    assert found == ["E012", "E013", "E014", "E014"]


@pytest.mark.parametrize("every", [0, -1, "60", None, float("nan")])
def test_clean_every_must_be_positive(every):
    with override_settings(CHANGEFLOW_CLEAN_EVERY=every):
        assert [m.id for m in check_tables()] == ["changeflow_channels.E016"]


def test_the_checks_are_registered():
    from django.core.checks import run_checks

    with override_settings(CHANGEFLOW_TABLES={"db.t": {"pk": 1}}):
        assert "changeflow_channels.E011" in [m.id for m in run_checks()]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CHANGEFLOW_TABLES", {"db.t": {"indexes": "x"}}, "indexes must be a list"),
        ("CHANGEFLOW_CLEAN_EVERY", 0, "CHANGEFLOW_CLEAN_EVERY must be a positive number"),
    ],
)
def test_the_worker_refuses_to_start_with_a_bad_setting(name, value, message):
    from changeflow_channels.worker import WorkerConfigError, create_worker

    layers = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    with (
        override_settings(CHANNEL_LAYERS=layers, CHANGEFLOW_HANDLERS=[], **{name: value}),
        pytest.raises(WorkerConfigError, match=message),
    ):
        create_worker()
