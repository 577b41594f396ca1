"""The Django the tests run on is a supported one, and the matrix's pass really runs on
the version it names (``make test-django-oldest`` sets ``CHANGEFLOW_TEST_DJANGO``)."""

from __future__ import annotations

import configparser
import os
from pathlib import Path

import django

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


def test_the_django_under_test_is_the_one_the_pass_names_and_a_listed_one():
    version = ".".join(map(str, django.VERSION[:2]))
    expected = os.environ.get("CHANGEFLOW_TEST_DJANGO")
    if expected:
        assert version == expected
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    assert f"Framework :: Django :: {version}" in config["metadata"]["classifiers"]
