"""Django settings of the benchmark's worker and Daphne processes.

The test suite's settings, with the channel layer configured as the README
recommends (``socket_timeout: None``), quiet logging and an allow-all policy.
"""

import os

from tests.settings import *  # noqa: F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": os.environ["CHANGEFLOW_TEST_REDIS_URL"], "socket_timeout": None}],
        },
    }
}
ASGI_APPLICATION = "bench.asgi.application"
CHANGEFLOW_VERBOSE = False
CHANGEFLOW_HANDLERS = []
CHANGEFLOW_PERMISSIONS = "changeflow_channels.permissions.AllowAllPolicy"
# The benchmark's clients read as fast as they can; a deep queue keeps a burst
# from closing them as "too slow".
CHANGEFLOW_SEND_QUEUE = 100_000
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "daphne": {"handlers": ["stderr"], "level": "INFO"},
        "changeflow_channels": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
# Capacity, not limits: the push scenarios' browser connections push as fast as
# they are answered, and the 10,000 clients subscribe from one address.
CHANGEFLOW_PUSH_RATE = 1_000_000.0
