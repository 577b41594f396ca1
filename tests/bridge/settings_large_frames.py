"""tests/settings.py, but consumers may make frames up to 4 MiB: larger than Daphne
sends (1 MiB), so that a send fails (tests/bridge/test_send_bounds.py)."""

from tests.settings import *  # noqa: F403

CHANGEFLOW_MAX_SENT_FRAME_BYTES = 4 * 1024 * 1024
