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
