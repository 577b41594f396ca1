"""Django settings of ``bench.tables``'s worker: the benchmark's, with the
worker's readiness logged (``changeflow worker ready``) and nothing else below
a warning (one INFO line per table would be part of the measurement)."""

from bench.settings import *  # noqa: F403

# The feeds of all tables share 8 connections (CHANGEFLOW_FEED_CONNECTIONS; None, the
# default, would give each table its own).
CHANGEFLOW_FEED_CONNECTIONS = 8

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "changeflow_channels": {"handlers": ["stderr"], "level": "WARNING"},
        "changeflow_channels.worker.runner": {"level": "INFO"},
    },
}
