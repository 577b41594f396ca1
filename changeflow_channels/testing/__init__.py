"""Testing tools shipped with changeflow_channels, like ``channels.testing``.

``ReqlServer`` is an in-memory server speaking RethinkDB's wire protocol to the
unmodified official driver: use it in your own tests instead of a real RethinkDB.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReqlServer", "ThreadedReqlServer"]


def __getattr__(name: str) -> Any:
    # Lazy, so that ``python -m changeflow_channels.testing.reql_server`` does
    # not find its module already imported (runpy warns about that).
    if name in __all__:
        from . import reql_server

        return getattr(reql_server, name)
    raise AttributeError(name)
