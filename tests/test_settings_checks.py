"""System checks for the CHANGEFLOW_* settings (``manage.py check``), and ``conf``:
every setting read in one place, with its default, and checked."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.checks import Error, Warning
from django.test import override_settings

from changeflow_channels import checks
from changeflow_channels.checks import check_settings
from changeflow_channels.conf import ChangeflowSettings, defaults, get_settings, setting_name
from changeflow_channels.worker.leases import redis_target

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "changeflow_channels"
REDIS = {"BACKEND": "changeflow_channels.redis_layer.RedisChannelLayer"}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
RULES_POLICY = "changeflow_channels.permissions.RulesPolicy"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


@pytest.fixture(autouse=True)
def _quiet_channel_layer():
    """Every test starts from settings that pass (the test settings may name a Redis layer)."""
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        yield


def test_defaults_pass():
    assert check_settings() == []


def test_the_check_is_registered_by_the_app():
    from django.core.checks import registry, run_checks

    assert check_settings in registry.registry.get_checks()
    with override_settings(CHANGEFLOW_SEND_QUEUE=0):
        assert "changeflow_channels.E040" in ids(run_checks())


# Every setting: values that pass, and each kind of bad value with its one id. ------------

# (setting, value); each must pass on its own.
GOOD = [
    ("RETHINKDB", "rethinkdbs://user:pw@db.example:28016"),
    ("RETHINKDB", "rethinkdb://user:pw@db1:28015,db2,db3:28016/app"),
    ("WATCH", ["shop.*", "log.events"]),
    ("WATCH", ("*",)),
    ("WATCH", []),
    ("CHANNEL", "my-app.changeflow_2"),
    ("HANDLERS", ["tests.hooks.sync_hook", "tests.hooks.async_hook"]),
    ("VERBOSE", False),
    ("PERMISSIONS", "changeflow_channels.permissions.DenyAllPolicy"),
    ("PERMISSIONS", "tests.policies.TestPolicy"),
    ("HANDLER_TIMEOUT", 0.5),
    ("PUSH_TIMEOUT", 30),
    ("HISTORY", 0),
    ("SNAPSHOT_LIMIT", 1),
    ("FEED_QUEUE_SIZE", 200),
    ("FEED_CONNECTIONS", 1),
    ("FEED_CONNECTIONS", None),
    ("MEMORY_BUDGET", None),
    ("MEMORY_BUDGET", 1),
    ("RULES", {}),
    ("RECHECK_EVERY", 5),
    ("TOKEN_MAX_AGE", 3600),
    ("TOKEN_MAX_AGE", 0.5),
    ("TOKEN_MAX_AGE", timedelta(hours=2)),
    ("RECHECK_GRACE", 0.5),
    ("TOKEN_CONNECTIONS", 1),
    ("ALLOWED_ORIGINS", None),
    ("ALLOWED_ORIGINS", ["https://example.com", "HTTP://LocalHost:8000", "http://[::1]:80"]),
    ("ALLOWED_ORIGINS", []),
    ("MAX_FRAME_BYTES", 1),
    ("MAX_SUBSCRIPTIONS", 1),
    ("PUSH_RATE", 0.5),
    ("PUSH_RATE", 100),
    ("SUBSCRIBE_RATE", 0.5),
    ("SYNC_RATE", 0.1),
    ("SYNC_BURST", 1),
    ("MAX_DOCUMENT_BYTES", 10_000_000),
    ("SEND_QUEUE", 1),
    ("SEND_QUEUE_BYTES", 1 << 30),
    ("MAX_SENT_FRAME_BYTES", 1 << 20),  # up to Daphne's default limit (W009 past it)
    ("SEND_WINDOW", 1),
    ("SEND_WINDOW_BYTES", 1 << 20),
    ("BATCH_SIZE", 1),
    ("BATCH_BYTES", 1024),
    ("SYNC_TIMEOUT", 2.5),
    ("IDEMPOTENCY_WINDOW", 3600),
    ("TABLES", {"shop.orders": {"primary_key": "uid", "indexes": ["created"]}}),
    ("CLEAN_EVERY", 1),
    ("MODELS", {"shop.Order": {"events": "cu", "fields": ["status"]}}),
    ("MODELS_DB", "mirror_db"),
    ("LEASE_TIME", 3),
    ("LEASE_REPLICAS", 0),
    ("LEASE_REPLICAS", 1),
    ("REDIS", "rediss://user:pw@redis.example:6380/1"),
    ("REDIS", "unix:///run/redis.sock"),
    ("REDIS", {"sentinels": [("s1", 26379), ["s2", 26379]], "master_name": "changeflow"}),
    ("REDIS", {"sentinels": [("s1", 26379)], "master_name": "m", "password": "pw", "db": 1}),
    ("METRICS_PORT", 9108),
    ("METRICS_PORT", 0),
    ("METRICS_PER_TABLE", False),
]


@pytest.mark.parametrize(("name", "value"), GOOD, ids=[f"{n}={v!r}" for n, v in GOOD])
def test_a_good_value_passes(name, value):
    # Leases on a Sentinel master want a replica's acknowledgement as well (W010).
    sentinel = name == "REDIS" and isinstance(value, dict)
    replicas = {"CHANGEFLOW_LEASE_REPLICAS": 1} if sentinel else {}
    with override_settings(**{f"CHANGEFLOW_{name}": value}, **replicas):
        assert check_settings() == []


POSITIVE_SECONDS = ["0", 0, -1, float("nan"), float("inf"), None, True]
POSITIVE_INTEGERS = [0, -5, 1000.0, "1000", None, True]

# (setting, bad value, the one id it gives, words of its message).
NOT_REDIS = "must be a Redis URL, a Sentinel host or None"
BAD = [
    ("RETHINKDB", "http://localhost", "E001", "not a valid server URL"),
    ("RETHINKDB", "rethinkdb://", "E001", "not a valid server URL"),
    ("RETHINKDB", "rethinkdb://host:notaport", "E001", "not a valid server URL"),
    ("RETHINKDB", "rethinkdb://db1,,db2", "E001", "an empty host in the list"),
    ("RETHINKDB", "rethinkdb://db1,db2:notaport", "E001", "invalid port"),
    ("RETHINKDB", 42, "E001", "expected a string"),
    ("WATCH", "*", "E002", "must be a list of patterns, not '*'"),
    ("WATCH", "shop.orders", "E002", "must be a list of patterns, not 'shop.orders'"),
    ("WATCH", ["db"], "E002", "watch pattern 'db'"),
    ("WATCH", ["db.bad name"], "E002", "'bad name' is invalid"),
    ("WATCH", ["*.table"], "E002", "'*' is invalid"),
    ("WATCH", [3], "E002", "watch pattern 3"),
    ("CHANNEL", "", "E027", "must be a channel name, not ''"),
    ("CHANNEL", "change flow", "E027", "must be a channel name"),
    ("CHANNEL", "changeflow!", "E027", "must be a channel name"),
    ("CHANNEL", "c" * 81, "E027", "must be a channel name"),
    ("CHANNEL", ["changeflow"], "E027", "must be a channel name"),
    ("HANDLERS", "tests.hooks.sync_hook", "E003", "must be a list of module paths, not 'tests"),
    ("HANDLERS", ["tests.hooks.does_not_exist"], "E003", "cannot import handler module"),
    ("HANDLERS", ["tests.policies"], "E003", "has no flow_handlers() function"),
    ("HANDLERS", [None], "E003", "None is not a module path"),
    ("HANDLERS", [""], "E003", "'' is not a module path"),
    ("VERBOSE", "yes", "E028", "must be True or False, not 'yes'"),
    ("VERBOSE", 1, "E028", "must be True or False, not 1"),
    ("PERMISSIONS", "tests.nowhere.Policy", "E005", "cannot be used"),
    ("PERMISSIONS", "tests.policies", "E005", "cannot be used"),
    ("PERMISSIONS", 42, "E005", "has no can_subscribe() method"),
    *[("HANDLER_TIMEOUT", v, "E029", "a positive number of seconds") for v in POSITIVE_SECONDS],
    *[("PUSH_TIMEOUT", v, "E030", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("HISTORY", -1, "E031", "an integer of at least 0, not -1"),
    ("HISTORY", 10.0, "E031", "an integer of at least 0, not 10.0"),
    ("HISTORY", "1000", "E031", "an integer of at least 0"),
    *[("SNAPSHOT_LIMIT", v, "E032", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("FEED_QUEUE_SIZE", v, "E053", "a positive integer") for v in POSITIVE_INTEGERS],
    *[
        ("FEED_CONNECTIONS", v, "E060", "a positive integer or None")
        for v in POSITIVE_INTEGERS
        if v is not None
    ],
    *[
        ("MEMORY_BUDGET", v, "E061", "a positive integer or None")
        for v in POSITIVE_INTEGERS
        if v is not None
    ],
    ("RULES", [], "E033", "must be a dict of pattern: rule, not []"),
    ("RULES", "shop.*", "E033", "must be a dict of pattern: rule"),
    ("RULES", {"shop": {"subscribe": "anyone"}}, "E033", "pattern 'shop' must be"),
    ("RULES", {"*.orders": {"subscribe": "anyone"}}, "E033", "pattern '*.orders' must be"),
    ("RULES", {"a b.*": {"subscribe": "anyone"}}, "E033", "'a b' is invalid"),
    ("RULES", {"shop.*": "anyone"}, "E033", "must be a dict of action: requirement"),
    ("RULES", {"shop.*": {"read": "anyone"}}, "E033", "unknown action(s) 'read'"),
    ("RULES", {"*": {"push": "everyone"}}, "E033", "'everyone' is neither one of anyone"),
    ("RULES", {"*": {"push": ["staff", 3]}}, "E033", "3 is neither"),
    *[("RECHECK_EVERY", v, "E034", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("TOKEN_MAX_AGE", 0, "E035", "a positive number of seconds, not 0"),
    ("TOKEN_MAX_AGE", "86400", "E035", "a positive number of seconds"),
    ("TOKEN_MAX_AGE", timedelta(0), "E035", "a positive number of seconds"),
    ("TOKEN_MAX_AGE", None, "E035", "a positive number of seconds"),
    *[("RECHECK_GRACE", v, "E056", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("TOKEN_CONNECTIONS", 0, "E055", "a positive integer, not 0"),
    ("TOKEN_CONNECTIONS", 2.0, "E055", "a positive integer"),
    ("ALLOWED_ORIGINS", "https://example.com", "E054", "is not a list of origins"),
    ("ALLOWED_ORIGINS", ["https://example.com/"], "E054", "is not an origin"),
    ("ALLOWED_ORIGINS", ["example.com"], "E054", "is not an origin"),
    ("ALLOWED_ORIGINS", ["https://example.com:99999"], "E054", "no valid port"),
    ("ALLOWED_ORIGINS", ["https://user@example.com"], "E054", "is not an origin"),
    *[("MAX_FRAME_BYTES", v, "E036", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("MAX_SUBSCRIPTIONS", v, "E037", "a positive integer") for v in POSITIVE_INTEGERS],
    ("PUSH_RATE", 0, "E038", "a positive number, not 0"),
    ("PUSH_RATE", -1.5, "E038", "a positive number"),
    ("PUSH_RATE", "20", "E038", "a positive number"),
    ("PUSH_RATE", float("inf"), "E038", "a positive number"),
    ("SUBSCRIBE_RATE", 0, "E057", "a positive number, not 0"),
    ("SUBSCRIBE_RATE", "10", "E057", "a positive number"),
    ("SYNC_RATE", -1, "E058", "a positive number"),
    ("SYNC_RATE", float("nan"), "E058", "a positive number"),
    ("SYNC_BURST", 0, "E059", "a positive integer, not 0"),
    ("SYNC_BURST", 2.5, "E059", "a positive integer"),
    *[("MAX_DOCUMENT_BYTES", v, "E039", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("SEND_QUEUE", v, "E040", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("SEND_QUEUE_BYTES", v, "E041", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("MAX_SENT_FRAME_BYTES", v, "E050", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("SEND_WINDOW", v, "E051", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("SEND_WINDOW_BYTES", v, "E052", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("BATCH_SIZE", v, "E042", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("BATCH_BYTES", v, "E043", "a positive integer") for v in POSITIVE_INTEGERS],
    *[("SYNC_TIMEOUT", v, "E044", "a positive number of seconds") for v in POSITIVE_SECONDS],
    *[("IDEMPOTENCY_WINDOW", v, "E046", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("TABLES", ["shop.orders"], "E010", "must be a dict"),
    ("TABLES", "shop.orders", "E010", "must be a dict"),
    ("TABLES", {"shop.orders": {"pk": "uid"}}, "E011", "unknown key(s) 'pk'"),
    ("TABLES", {"shop.orders": {"indexes": "created"}}, "E013", "indexes must be a list"),
    *[("CLEAN_EVERY", v, "E016", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("MODELS", ["shop.Order"], "E020", "must be a dict"),
    ("MODELS", "shop.Order", "E020", "must be a dict, not str"),
    ("MODELS", {"shop.Nope": {}}, "E021", "not an installed model"),
    ("MODELS", {"shop.Order": {"fields": "status"}}, "E022", "must be a list of field names"),
    ("MODELS_DB", "bad name", "E026", "'bad name' is invalid"),
    ("MODELS_DB", "", "E026", "must be a non-empty string"),
    ("MODELS_DB", None, "E026", "must be a non-empty string"),
    *[("LEASE_TIME", v, "E006", "a positive number of seconds") for v in POSITIVE_SECONDS],
    ("LEASE_REPLICAS", -1, "E062", "an integer of at least 0"),
    ("LEASE_REPLICAS", "1", "E062", "an integer of at least 0"),
    ("LEASE_REPLICAS", None, "E062", "an integer of at least 0"),
    ("LEASE_REPLICAS", True, "E062", "an integer of at least 0"),
    ("REDIS", "127.0.0.1:6379", "E007", NOT_REDIS),
    ("REDIS", "http://redis", "E007", NOT_REDIS),
    ("REDIS", 6379, "E007", NOT_REDIS),
    ("REDIS", {"sentinels": [("s1", 26379)]}, "E007", NOT_REDIS),
    ("REDIS", {"master_name": "m"}, "E007", NOT_REDIS),
    ("REDIS", {"sentinels": [], "master_name": "m"}, "E007", NOT_REDIS),
    ("REDIS", {"sentinels": ["s1:26379"], "master_name": "m"}, "E007", NOT_REDIS),
    ("REDIS", {"sentinels": [("s1", "26379")], "master_name": "m"}, "E007", NOT_REDIS),
    ("REDIS", {"sentinels": [("s1", 26379)], "master_name": ""}, "E007", NOT_REDIS),
    ("REDIS", {"address": "redis://x", "master_name": "m"}, "E007", NOT_REDIS),
    ("METRICS_PORT", -1, "E008", "must be a TCP port number or None"),
    ("METRICS_PORT", 70000, "E008", "must be a TCP port number or None"),
    ("METRICS_PORT", "9108", "E008", "must be a TCP port number or None"),
    ("METRICS_PORT", 9108.0, "E008", "must be a TCP port number or None"),
    ("METRICS_PORT", False, "E008", "must be a TCP port number or None"),
    ("METRICS_PER_TABLE", "no", "E045", "must be True or False"),
    ("METRICS_PER_TABLE", None, "E045", "must be True or False"),
]


@pytest.mark.parametrize(
    ("name", "value", "check_id", "words"), BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD]
)
def test_a_bad_value_gives_exactly_its_error(name, value, check_id, words):
    # Rules without RulesPolicy would warn as well (W005).
    policy = {"CHANGEFLOW_PERMISSIONS": RULES_POLICY} if name == "RULES" else {}
    with override_settings(**{f"CHANGEFLOW_{name}": value}, **policy):
        [error] = check_settings()
    assert isinstance(error, Error)
    assert error.id == f"changeflow_channels.{check_id}"
    assert f"CHANGEFLOW_{name}" in error.msg and words in error.msg, error.msg
    assert error.hint


def test_every_setting_is_checked_and_has_good_and_bad_examples():
    every = set(defaults())
    assert {f"CHANGEFLOW_{name}" for name, *_ in BAD} == every
    assert {f"CHANGEFLOW_{name}" for name, _ in GOOD} == every


def test_a_string_for_a_list_is_one_error_not_one_per_character():
    with override_settings(CHANGEFLOW_HANDLERS="a.b", CHANGEFLOW_WATCH="shop.*"):
        messages = check_settings()
    assert ids(messages) == ["changeflow_channels.E002", "changeflow_channels.E003"]
    assert "CHANGEFLOW_WATCH must be a list of patterns, not 'shop.*'" in messages[0].msg
    assert "CHANGEFLOW_HANDLERS must be a list of module paths, not 'a.b'" in messages[1].msg
    assert messages[1].hint == "Put it in a list: ['a.b']."


def test_every_bad_setting_at_once_is_reported_without_a_crash():
    first = {}  # the first bad value of each setting
    for name, value, check_id, _ in BAD:
        first.setdefault(name, (value, check_id))
    with override_settings(**{f"CHANGEFLOW_{name}": value for name, (value, _) in first.items()}):
        found = sorted({m.id.rsplit(".", 1)[1] for m in check_settings()})
    assert found == sorted({check_id for _, check_id in first.values()})


# Warnings and checks of settings together. ------------------------------------------------


def test_missing_channel_layer():
    with override_settings(CHANNEL_LAYERS={}):
        assert ids(check_settings()) == ["changeflow_channels.E004"]


def test_plain_redis_config_warns_about_socket_timeout():
    plain = {"default": {**REDIS, "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}
    with override_settings(CHANNEL_LAYERS=plain):
        [warning] = check_settings()
    assert isinstance(warning, Warning) and warning.id == "changeflow_channels.W001"
    assert '"socket_timeout": None' in warning.hint
    fixed = {
        "default": {
            **REDIS,
            "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": None}]},
        }
    }
    with override_settings(CHANNEL_LAYERS=fixed):
        assert check_settings() == []


def test_channels_redis_own_layer_warns_about_bursts_and_restarts():
    hosts = {"hosts": [{"address": "redis://x", "socket_timeout": None}]}
    plain = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": hosts}
    with override_settings(CHANNEL_LAYERS={"default": plain}):
        [warning] = check_settings()
    assert warning.id == "changeflow_channels.W007"
    assert "changeflow_channels.redis_layer.RedisChannelLayer" in warning.hint
    ours = {**REDIS, "CONFIG": hosts}
    with override_settings(CHANNEL_LAYERS={"default": ours}):
        assert check_settings() == []


def test_allow_all_without_debug_warns():
    allow_all = "changeflow_channels.permissions.AllowAllPolicy"
    with override_settings(CHANGEFLOW_PERMISSIONS=allow_all, DEBUG=False):
        [warning] = check_settings()
    assert isinstance(warning, Warning) and warning.id == "changeflow_channels.W002"
    with override_settings(CHANGEFLOW_PERMISSIONS=allow_all, DEBUG=True):
        assert check_settings() == []


def test_pubsub_layer_warns_that_several_workers_would_each_write_each_push():
    pubsub = {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": None}]},
    }
    with override_settings(CHANNEL_LAYERS={"default": pubsub}):
        [warning] = check_settings()
    assert warning.id == "changeflow_channels.W003" and "one worker" in warning.hint


SENTINEL = {
    "sentinels": [("127.0.0.1", 26379)],
    "master_name": "changeflow",
    "socket_timeout": None,
}


def test_leases_on_a_sentinel_master_without_replicas_acknowledging_warn():
    on_sentinel = {"default": {**REDIS, "CONFIG": {"hosts": [SENTINEL]}}}
    with override_settings(CHANNEL_LAYERS=on_sentinel):
        [warning] = check_settings()
        assert warning.id == "changeflow_channels.W010"
        assert "CHANGEFLOW_LEASE_REPLICAS = 1" in warning.hint
        with override_settings(CHANGEFLOW_LEASE_REPLICAS=1):
            assert check_settings() == []
        # The leases elsewhere: a plain Redis of their own.
        with override_settings(CHANGEFLOW_REDIS="redis://127.0.0.1:6379/1"):
            assert check_settings() == []
    # The layer on a plain Redis, the leases on a Sentinel master.
    plain = {"hosts": [{"address": "redis://x", "socket_timeout": None}]}
    with override_settings(
        CHANNEL_LAYERS={"default": {**REDIS, "CONFIG": plain}}, CHANGEFLOW_REDIS=SENTINEL
    ):
        assert ids(check_settings()) == ["changeflow_channels.W010"]


def test_w010_looks_at_the_redis_the_worker_takes_its_leases_from():
    # A layer of one's own (its module named like this one's): the worker keeps its
    # leases on its first host, a Sentinel master here, so W010 must look there too.
    custom = {"BACKEND": "myproject.redis_layer.ShardedLayer", "CONFIG": {"hosts": [SENTINEL]}}
    with override_settings(CHANNEL_LAYERS={"default": custom}):
        target = redis_target("default", None, "changeflow")
        assert target is not None and target.description == "sentinel master changeflow"
        assert ids(check_settings()) == ["changeflow_channels.W010"]
    # A layer that is not Redis: no leases, nothing to warn of.
    memory = {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    with override_settings(CHANNEL_LAYERS={"default": memory}):
        assert redis_target("default", None, "changeflow") is None
        assert "changeflow_channels.W010" not in ids(check_settings())


def test_short_lease_time_warns_and_a_sound_one_passes():
    with override_settings(CHANGEFLOW_LEASE_TIME=1.0):
        [warning] = check_settings()
    assert isinstance(warning, Warning) and warning.id == "changeflow_channels.W004"
    with override_settings(CHANGEFLOW_LEASE_TIME=10):
        assert check_settings() == []


RULES = {
    "shop.orders": {"subscribe": "authenticated", "push": "staff"},
    "shop.*": {"subscribe": ["staff", "shop.view_order"]},
    "*": {"subscribe": "superuser"},
}


def test_rules_pass_with_the_rules_policy_and_warn_without_it():
    with override_settings(CHANGEFLOW_RULES=RULES, CHANGEFLOW_PERMISSIONS=RULES_POLICY):
        assert check_settings() == []
    with override_settings(CHANGEFLOW_RULES=RULES):
        [warning] = check_settings()
    assert isinstance(warning, Warning) and warning.id == "changeflow_channels.W005"
    assert "AuthenticatedReadPolicy" in warning.msg and "RulesPolicy" in warning.hint


def test_every_bad_rule_is_reported():
    rules = {"shop": {}, "a.*": {"push": "x"}, "b.*": {"subscribe": "y", "push": "staff"}}
    with override_settings(CHANGEFLOW_RULES=rules, CHANGEFLOW_PERMISSIONS=RULES_POLICY):
        assert ids(check_settings()) == ["changeflow_channels.E033"] * 3


def test_a_batch_as_large_as_the_send_queue_warns():
    with override_settings(CHANGEFLOW_BATCH_BYTES=1 << 20, CHANGEFLOW_SEND_QUEUE_BYTES=1 << 20):
        [warning] = check_settings()
    assert isinstance(warning, Warning) and warning.id == "changeflow_channels.W006"
    assert "1048576" in warning.msg
    with override_settings(CHANGEFLOW_BATCH_BYTES=1 << 20, CHANGEFLOW_SEND_QUEUE_BYTES=0):
        assert ids(check_settings()) == ["changeflow_channels.E041"]  # not W006 as well


def test_models_db_is_checked_once_with_or_without_models():
    models = {"shop.Order": {}, "auth.User": {}}
    with override_settings(CHANGEFLOW_MODELS_DB="bad name", CHANGEFLOW_MODELS=models):
        assert ids(check_settings()) == ["changeflow_channels.E026"]
    with override_settings(CHANGEFLOW_MODELS_DB="x" * 95, CHANGEFLOW_MODELS=models):
        assert ids(check_settings()) == ["changeflow_channels.E026"] * 2  # each stream too long


# conf: every setting in one place. ---------------------------------------------------------


def test_conf_reads_every_setting_with_its_default():
    conf = get_settings()
    assert conf.send_queue == 1000 and conf.token_max_age == 86400 and conf.rules == {}
    with override_settings(CHANGEFLOW_RULES=RULES, CHANGEFLOW_TOKEN_MAX_AGE=60):
        assert get_settings().rules == RULES and get_settings().token_max_age == 60
    # Defaults are fresh copies: changing one cannot change the next.
    defaults()["CHANGEFLOW_WATCH"].append("x")
    assert defaults()["CHANGEFLOW_WATCH"] == ["*"]
    assert setting_name("send_queue") == "CHANGEFLOW_SEND_QUEUE"
    assert len(dataclasses.fields(ChangeflowSettings)) == len(defaults()) == 44


def test_nothing_but_conf_reads_a_changeflow_setting():
    reads = re.compile(r"""settings\.CHANGEFLOW_|getattr\(\s*\w*settings\s*,\s*["']CHANGEFLOW_""")
    readers = [
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if path.name != "conf.py" and reads.search(path.read_text())
    ]
    assert readers == []


def test_rules_policy_and_tokens_read_their_settings_through_conf():
    from changeflow_channels.auth import make_token, user_id_from_token
    from changeflow_channels.permissions import RulesPolicy

    with override_settings(CHANGEFLOW_RULES=RULES):
        assert RulesPolicy().requirement("shop.orders", "push") == "staff"
    user = AnonymousUser()
    user.pk = 7
    token = make_token(user)
    assert user_id_from_token(token) == "7"
    with override_settings(CHANGEFLOW_TOKEN_MAX_AGE=timedelta(seconds=-1)):
        assert user_id_from_token(token) is None  # expired


def test_the_readme_lists_every_setting_with_its_default():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {
        name: row
        for row in section.splitlines()
        if row.startswith("| `CHANGEFLOW_")
        for name in re.findall(r"`(CHANGEFLOW_[A-Z_]+)`", row.split("|")[1])
    }
    assert set(rows) == set(defaults())
    for name, default in defaults().items():
        assert f"`{default!r}`".replace("'", '"') in rows[name], (name, rows[name])
    named = set(re.findall(r"`([EW]\d{3})`", section))
    for first, last in re.findall(r"`E(\d{3})`\u2013`E(\d{3})`", section):
        named |= {f"E{n:03d}" for n in range(int(first), int(last) + 1)}
    assert named == set(re.findall(r"^([EW]\d{3})  ", checks.__doc__, re.MULTILINE))
