"""Daphne imports ``changeflow_channels.routing``: that must load neither the
RethinkDB driver nor the worker (``changeflow_channels.worker``)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import sys
import django

django.setup()
import changeflow_channels.routing  # noqa: F401

loaded = sorted(
    name for name in sys.modules if name.startswith(("rethinkdb", "changeflow_channels.worker"))
)
print("\\n".join(loaded))
"""


def test_routing_loads_no_driver_and_no_worker():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [], f"loaded by routing: {done.stdout.split()}"
