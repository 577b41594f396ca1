"""Django settings for the test suite and the worker/Daphne processes it starts.

The processes learn where RethinkDB and Redis are from the environment. The
channel layer config is deliberately the plain one users write (a bare URL, so
redis-py's 5 s socket_timeout applies): the suite proves we survive it.
"""

import json
import os

SECRET_KEY = "changeflow-tests"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
    "changeflow_channels",
    "tests.shop",  # models for the model-flow tests
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "tests.urls"
ASGI_APPLICATION = "tests.asgi.application"

REDIS_URL = os.environ.get("CHANGEFLOW_TEST_REDIS_URL")
# JSON: a channels_redis host naming a Sentinel master (tests/sentinel/), instead of the URL.
REDIS_SENTINEL = os.environ.get("CHANGEFLOW_TEST_REDIS_SENTINEL")
if REDIS_URL or REDIS_SENTINEL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "changeflow_channels.redis_layer.RedisChannelLayer",
            # A test may give its own workers a namespace of their own.
            "CONFIG": {
                "hosts": [json.loads(REDIS_SENTINEL) if REDIS_SENTINEL else REDIS_URL],
                "prefix": os.environ.get("CHANGEFLOW_TEST_REDIS_PREFIX", "asgi"),
                # A tiny capacity makes group_send drop messages (fault tests).
                "capacity": int(os.environ.get("CHANGEFLOW_TEST_CAPACITY", "100")),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CHANGEFLOW_RETHINKDB = os.environ.get(
    "CHANGEFLOW_TEST_RETHINKDB_URL", "rethinkdb://admin@127.0.0.1:28015"
)
CHANGEFLOW_HANDLERS = [m for m in os.environ.get("CHANGEFLOW_TEST_HANDLERS", "").split(",") if m]
CHANGEFLOW_HANDLER_TIMEOUT = 1.0
CHANGEFLOW_PUSH_TIMEOUT = 5.0
CHANGEFLOW_CHANNEL = os.environ.get("CHANGEFLOW_TEST_CHANNEL", "changeflow")
CHANGEFLOW_PERMISSIONS = os.environ.get(
    "CHANGEFLOW_TEST_PERMISSIONS", "changeflow_channels.permissions.AuthenticatedReadPolicy"
)
if os.environ.get("CHANGEFLOW_TEST_WATCH"):
    CHANGEFLOW_WATCH = os.environ["CHANGEFLOW_TEST_WATCH"].split(",")
if os.environ.get("CHANGEFLOW_TEST_BATCH_SIZE"):
    CHANGEFLOW_BATCH_SIZE = int(os.environ["CHANGEFLOW_TEST_BATCH_SIZE"])
if os.environ.get("CHANGEFLOW_TEST_HISTORY"):
    CHANGEFLOW_HISTORY = int(os.environ["CHANGEFLOW_TEST_HISTORY"])
if os.environ.get("CHANGEFLOW_TEST_FEED_QUEUE_SIZE"):
    CHANGEFLOW_FEED_QUEUE_SIZE = int(os.environ["CHANGEFLOW_TEST_FEED_QUEUE_SIZE"])
if os.environ.get("CHANGEFLOW_TEST_FEED_CONNECTIONS"):
    CHANGEFLOW_FEED_CONNECTIONS = int(os.environ["CHANGEFLOW_TEST_FEED_CONNECTIONS"])
if os.environ.get("CHANGEFLOW_TEST_MEMORY_BUDGET"):
    CHANGEFLOW_MEMORY_BUDGET = int(os.environ["CHANGEFLOW_TEST_MEMORY_BUDGET"])
if os.environ.get("CHANGEFLOW_TEST_SYNC_BURST"):  # tests/bridge/test_workers.py
    CHANGEFLOW_SYNC_BURST = int(os.environ["CHANGEFLOW_TEST_SYNC_BURST"])
if os.environ.get("CHANGEFLOW_TEST_SNAPSHOT_LIMIT"):
    CHANGEFLOW_SNAPSHOT_LIMIT = int(os.environ["CHANGEFLOW_TEST_SNAPSHOT_LIMIT"])
if os.environ.get("CHANGEFLOW_TEST_TABLES"):  # JSON
    CHANGEFLOW_TABLES = json.loads(os.environ["CHANGEFLOW_TEST_TABLES"])
# Leases (several workers) expire fast in tests: a killed worker's tables move soon.
CHANGEFLOW_LEASE_TIME = float(os.environ.get("CHANGEFLOW_TEST_LEASE_TIME", "5"))
if os.environ.get("CHANGEFLOW_TEST_LEASE_REPLICAS"):
    CHANGEFLOW_LEASE_REPLICAS = int(os.environ["CHANGEFLOW_TEST_LEASE_REPLICAS"])
if os.environ.get("CHANGEFLOW_TEST_CHANGEFLOW_REDIS"):  # JSON: a URL or a Sentinel host
    CHANGEFLOW_REDIS = json.loads(os.environ["CHANGEFLOW_TEST_CHANGEFLOW_REDIS"])
if os.environ.get("CHANGEFLOW_TEST_CLEAN_EVERY"):
    CHANGEFLOW_CLEAN_EVERY = float(os.environ["CHANGEFLOW_TEST_CLEAN_EVERY"])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"daphne": {"handlers": ["stderr"], "level": "INFO"}},
}
# Fault tests: log the channel layer's "over capacity" notices and the bridge's own
# decisions (gaps, syncs, resyncs) in Daphne too, for reading in test-output/.
if os.environ.get("CHANGEFLOW_TEST_DEBUG_LOGS"):
    LOGGING["formatters"] = {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}}
    LOGGING["handlers"]["stderr"]["formatter"] = "plain"
    for _name in ("channels_redis", "changeflow_channels"):
        LOGGING["loggers"][_name] = {"handlers": ["stderr"], "level": "INFO", "propagate": False}
