"""The channels_redis release the tests run on is one whose internals are known.

``make test`` runs the tests that rely on channels_redis's internals twice: on
the release installed (the newest allowed) and on the oldest supported
(``CHANGEFLOW_TEST_CHANNELS_REDIS`` names it then).
"""

from __future__ import annotations

import os
from importlib import metadata

from changeflow_channels import redis_layer


def test_the_installed_channels_redis_is_a_known_release():
    assert redis_layer.internals_known(), redis_layer.channels_redis_version()
    expected = os.environ.get("CHANGEFLOW_TEST_CHANNELS_REDIS")
    if expected:  # the pass on the oldest release really runs on it
        assert metadata.version("channels-redis") == expected


def test_a_release_outside_the_known_range_is_not_known(monkeypatch):
    for version, known in [("4.1.0", False), ("4.2.0", True), ("4.3.0", True), ("4.4.0", False)]:
        monkeypatch.setattr(metadata, "version", lambda _name, v=version: v)
        assert redis_layer.internals_known() is known, version
