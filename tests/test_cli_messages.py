"""The command line's mistakes and failures explain themselves in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from changeflow_channels.testing.processes import free_port
from changeflow_channels.worker.cluster_status import render

REPO = Path(__file__).resolve().parents[1]


def changeflow(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "django", "changeflow", *args],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **env},
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_push_with_redis_down_is_one_line():
    # Nothing listens on a free port: the channel layer's Redis is down.
    done = changeflow(
        "push", "db.t", '{"a": 1}', CHANGEFLOW_TEST_REDIS_URL=f"redis://127.0.0.1:{free_port()}"
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]  # after the test settings' W001 warning
    assert line.startswith("CommandError: the channel layer 'default' is unreachable (")
    assert line.endswith("is Redis running?")


def test_django_options_are_accepted_after_the_subcommand():
    done = changeflow("push", "--help", "--settings", "tests.settings", "--pythonpath", ".")
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout


def test_status_counts_in_words():
    status = {
        "rethinkdb": {"ok": True, "address": "r:28015", "latency_ms": 1, "tables": 1},
        "redis": None,
        "workers": [
            {
                "id": "w1",
                "heartbeat_age": 0.5,
                "tables": {"db.t": {}},
                "host": "h",
                "pid": 1,
                "uptime": 3,
            },
        ],
        "channel": "changeflow",
        "lease_time": 10.0,
        "tables": {"watched": 1, "followed": 1, "unfollowed": []},
        "problems": [],
        "ok": True,
    }
    text = render(status)
    assert "1 tables" not in text and "table(s)" not in text
    assert "1 table" in text
