"""changeflow_channels: RethinkDB changefeeds streamed to browsers through Django Channels."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["PushError", "PushFailed", "apush_to_flow", "push_to_flow"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing the package does not need configured Django settings.
    if name in ("push_to_flow", "apush_to_flow", "PushFailed"):
        from . import push_api

        return getattr(push_api, name)
    if name == "PushError":
        from .pushes import PushError

        return PushError
    raise AttributeError(name)
