"""System checks for the CHANGEFLOW_* settings (``manage.py check``)."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning
from django.test import override_settings

from changeflow_channels.checks import check_settings

REDIS = {"BACKEND": "channels_redis.core.RedisChannelLayer"}


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_defaults_pass():
    with override_settings(
        CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    ):
        assert check_settings() == []


@pytest.mark.parametrize(
    "url", ["http://localhost", "rethinkdb://", "rethinkdb://host:notaport", 42]
)
def test_malformed_rethinkdb_url(url):
    with override_settings(CHANGEFLOW_RETHINKDB=url):
        [error] = [m for m in check_settings() if m.id == "changeflow_channels.E001"]
    assert isinstance(error, Error) and error.hint


@pytest.mark.parametrize("watch", ["*", ["db"], ["db.bad name"], ["*.table"], [3]])
def test_bad_watch_pattern(watch):
    with override_settings(CHANGEFLOW_WATCH=watch):
        assert "changeflow_channels.E002" in ids(check_settings())


@pytest.mark.parametrize("module", ["tests.hooks.does_not_exist", "tests.policies"])
def test_handler_module_that_cannot_be_used(module):
    with override_settings(CHANGEFLOW_HANDLERS=[module]):
        [error] = [m for m in check_settings() if m.id == "changeflow_channels.E003"]
    assert module in error.msg


def test_missing_channel_layer():
    with override_settings(CHANNEL_LAYERS={}):
        assert "changeflow_channels.E004" in ids(check_settings())


def test_plain_redis_config_warns_about_socket_timeout():
    plain = {"default": {**REDIS, "CONFIG": {"hosts": ["redis://127.0.0.1:6379"]}}}
    with override_settings(CHANNEL_LAYERS=plain):
        [warning] = [m for m in check_settings() if m.id == "changeflow_channels.W001"]
    assert isinstance(warning, Warning) and '"socket_timeout": None' in warning.hint
    fixed = {
        "default": {
            **REDIS,
            "CONFIG": {"hosts": [{"address": "redis://x", "socket_timeout": None}]},
        }
    }
    with override_settings(CHANNEL_LAYERS=fixed):
        assert "changeflow_channels.W001" not in ids(check_settings())


def test_bad_permissions_and_allow_all_without_debug():
    with override_settings(CHANGEFLOW_PERMISSIONS="tests.nowhere.Policy"):
        assert "changeflow_channels.E005" in ids(check_settings())
    with override_settings(
        CHANGEFLOW_PERMISSIONS="changeflow_channels.permissions.AllowAllPolicy", DEBUG=False
    ):
        assert "changeflow_channels.W002" in ids(check_settings())


@pytest.mark.parametrize("lease_time", [0, -1, "10", None, True])
def test_bad_lease_time(lease_time):
    with override_settings(CHANGEFLOW_LEASE_TIME=lease_time):
        [error] = [m for m in check_settings() if m.id == "changeflow_channels.E006"]
    assert isinstance(error, Error) and repr(lease_time) in error.msg


def test_short_lease_time_warns_and_a_sound_one_passes():
    with override_settings(CHANGEFLOW_LEASE_TIME=1.0):
        assert "changeflow_channels.W004" in ids(check_settings())
    with override_settings(CHANGEFLOW_LEASE_TIME=10):
        assert not {"changeflow_channels.E006", "changeflow_channels.W004"} & set(
            ids(check_settings())
        )


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://redis", 6379])
def test_bad_redis_url(url):
    with override_settings(CHANGEFLOW_REDIS=url):
        assert "changeflow_channels.E007" in ids(check_settings())
    with override_settings(CHANGEFLOW_REDIS="rediss://user:pw@redis.example:6380/1"):
        assert "changeflow_channels.E007" not in ids(check_settings())


@pytest.mark.parametrize("port", [-1, 70000, "9108", 9108.0, False])
def test_bad_metrics_port(port):
    with override_settings(CHANGEFLOW_METRICS_PORT=port):
        assert "changeflow_channels.E008" in ids(check_settings())
    with override_settings(CHANGEFLOW_METRICS_PORT=9108):
        assert "changeflow_channels.E008" not in ids(check_settings())


def test_pubsub_layer_warns_that_several_workers_would_each_write_each_push():
    pubsub = {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {}}
    with override_settings(CHANNEL_LAYERS={"default": pubsub}):
        [warning] = [m for m in check_settings() if m.id == "changeflow_channels.W003"]
    assert "one worker" in warning.hint
    with override_settings(CHANNEL_LAYERS={"default": REDIS}):
        assert "changeflow_channels.W003" not in ids(check_settings())
