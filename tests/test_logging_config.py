"""Logging: every module logs under ``changeflow_channels``, and the worker command leaves a
project's logging configuration alone."""

import contextlib
import importlib
import logging
import pkgutil
from collections.abc import Iterator

import pytest

import changeflow_channels
from changeflow_channels.management.commands.changeflow import configure_logging


@contextlib.contextmanager
def bare_logging() -> Iterator[logging.Logger]:
    """Neither the ``changeflow_channels`` logger nor the root logger configured (pytest's
    own capture handlers on the root taken off meanwhile); everything restored after."""
    package = logging.getLogger("changeflow_channels")
    root = logging.getLogger()
    saved = (package.level, package.handlers[:], root.handlers[:])
    package.setLevel(logging.NOTSET)
    package.handlers[:] = []
    root.handlers[:] = []
    try:
        yield package
    finally:
        package.setLevel(saved[0])
        package.handlers[:] = saved[1]
        root.handlers[:] = saved[2]


@pytest.mark.parametrize("verbose, level", [(True, logging.INFO), (False, logging.WARNING)])
def test_nothing_configured_logs_to_stderr(verbose, level):
    with bare_logging() as package:
        configure_logging(verbose)
        assert package.level == level
        [handler] = package.handlers
        assert isinstance(handler, logging.StreamHandler)
        configure_logging(verbose)  # once is enough
        assert len(package.handlers) == 1


@pytest.mark.parametrize("verbose", [True, False])
def test_a_configured_level_is_kept(verbose):
    with bare_logging() as package:
        package.setLevel(logging.DEBUG)
        configure_logging(verbose)
        assert package.level == logging.DEBUG
        assert package.handlers == []


@pytest.mark.parametrize("verbose", [True, False])
def test_configured_handlers_are_kept_and_no_level_is_set(verbose):
    with bare_logging() as package:
        handler = logging.NullHandler()
        package.addHandler(handler)
        configure_logging(verbose)
        assert package.handlers == [handler]
        assert package.level == logging.NOTSET


def test_a_configured_root_logger_is_enough():
    with bare_logging() as package:
        root = logging.getLogger()
        root.addHandler(logging.NullHandler())
        configure_logging(True)
        assert package.handlers == []
        assert package.level == logging.NOTSET


def test_every_module_logs_under_its_own_name():
    prefix = changeflow_channels.__name__ + "."
    for info in pkgutil.walk_packages(changeflow_channels.__path__, prefix):
        if info.name.endswith(".__main__"):
            continue
        module = importlib.import_module(info.name)
        logger = getattr(module, "logger", None)
        if not isinstance(logger, logging.Logger):
            continue
        assert logger.name == info.name


def test_records_of_every_module_reach_the_package_logger(caplog):
    from changeflow_channels.worker import feeds

    with caplog.at_level(logging.INFO, logger="changeflow_channels"):
        feeds.logger.info("hello")
    [record] = caplog.records
    assert record.name == "changeflow_channels.worker.feeds"
