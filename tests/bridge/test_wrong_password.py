"""A wrong RethinkDB password is said plainly: an ERROR from the worker (not the
warning of a passing outage) and a PROBLEM line from ``changeflow status``."""

from __future__ import annotations

import os
import subprocess
import sys

from changeflow_channels.testing.processes import start_worker

from .conftest import REPO


def wrong_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    credentials, where = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:not-the-password@{where}"


def test_a_wrong_password_is_an_error_and_a_status_problem(process_env):
    env = {
        **os.environ,
        **process_env,
        "CHANGEFLOW_TEST_RETHINKDB_URL": wrong_password(
            process_env["CHANGEFLOW_TEST_RETHINKDB_URL"]
        ),
        "CHANGEFLOW_TEST_REDIS_PREFIX": "wrong-password",
    }
    worker = start_worker(env=env, cwd=str(REPO))
    try:
        worker.wait_for("ERROR", timeout=60)
        assert "authentication failed (check the user and password in CHANGEFLOW_RETHINKDB)" in (
            worker.output
        )
        assert "RethinkDB unavailable" not in worker.output
    finally:
        worker.stop()
    status = subprocess.run(
        [sys.executable, "-m", "django", "changeflow", "status"],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode != 0
    assert "PROBLEM    RethinkDB at " in status.stdout
    assert "refused user 'admin': authentication failed" in status.stdout
