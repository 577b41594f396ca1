"""Settings of the security tests' Daphne and worker: the README's wiring with
``RulesPolicy`` and a row rule (``tests.security.policies.OwnOrders``), users in a
sqlite file shared by Daphne, the worker and the tests' admin commands."""

import os

from tests.settings import *  # noqa: F403

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHANGEFLOW_TEST_DB_PATH", ":memory:"),
    }
}
# Fast hashing: the tests make many users and change passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ASGI_APPLICATION = "tests.security.asgi.application"
# tests/security/test_amplification.py runs a Daphne without the row rule (resumes by seq).
CHANGEFLOW_PERMISSIONS = os.environ.get(
    "CHANGEFLOW_TEST_SECURITY_POLICY", "tests.security.policies.OwnOrders"
)
CHANGEFLOW_RULES = {
    "secdb.*": {"subscribe": "authenticated", "push": "authenticated"},
    "secdb.staffonly": {"subscribe": "staff", "push": "staff"},
}
CHANGEFLOW_RECHECK_EVERY = float(os.environ.get("CHANGEFLOW_TEST_RECHECK_EVERY", "1"))
if os.environ.get("CHANGEFLOW_TEST_TOKEN_MAX_AGE"):
    CHANGEFLOW_TOKEN_MAX_AGE = float(os.environ["CHANGEFLOW_TEST_TOKEN_MAX_AGE"])
if os.environ.get("CHANGEFLOW_TEST_TOKEN_CONNECTIONS"):  # tests/security/test_tokens.py
    CHANGEFLOW_TOKEN_CONNECTIONS = int(os.environ["CHANGEFLOW_TEST_TOKEN_CONNECTIONS"])
if os.environ.get("CHANGEFLOW_TEST_RECHECK_GRACE"):  # tests/security/test_fail_closed.py
    CHANGEFLOW_RECHECK_GRACE = float(os.environ["CHANGEFLOW_TEST_RECHECK_GRACE"])
if os.environ.get("CHANGEFLOW_TEST_MAX_FRAME_BYTES"):  # tests/security/test_inbound.py
    CHANGEFLOW_MAX_FRAME_BYTES = int(os.environ["CHANGEFLOW_TEST_MAX_FRAME_BYTES"])
# Everything the bridge logs at INFO and above reaches Daphne's and the worker's output,
# where tests/security/test_logs.py looks for other users' data (issue 15, item 8).
LOGGING["loggers"]["changeflow_channels"] = {  # noqa: F405
    "handlers": ["stderr"],
    "level": "INFO",
    "propagate": False,
}
