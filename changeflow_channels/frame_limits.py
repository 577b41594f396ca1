"""Whether the ASGI server's websocket limits agree with the consumer's.

Daphne (through autobahn) refuses an incoming message larger than its
``--websocket-max-message-size`` (or a frame larger than ``--websocket-max-frame-size``;
both 1 MiB by default since Daphne 4.2.2) before the consumer sees it, and it refuses
to send a message larger than the former. So:

- ``CHANGEFLOW_MAX_FRAME_BYTES`` must be below what Daphne accepts: a frame between
  the two is answered ``too_large`` and the connection stays open; above Daphne's limit
  the connection is closed (1009).
- ``CHANGEFLOW_MAX_SENT_FRAME_BYTES`` must not exceed what Daphne sends: a larger frame
  would close the connection with 4011.

``changeflow_channels.serve`` refuses to start when they disagree (it knows Daphne's
values); ``manage.py check`` warns (W009) when they disagree with Daphne's defaults.
"""

from __future__ import annotations

from .conf import ChangeflowSettings
from .web.protocol import TOO_LARGE, FrameError

# Daphne's defaults for --websocket-max-message-size and --websocket-max-frame-size.
DAPHNE_DEFAULT_MAX_SIZE = 1024 * 1024


def accepted_bytes(max_message: int, max_frame: int) -> int | None:
    """The largest single-frame message the server accepts (``None``: no limit; Daphne
    and autobahn read 0 as none). Browsers send every message as one frame."""
    limits = [limit for limit in (max_message, max_frame) if limit > 0]
    return min(limits) if limits else None


def limit_problems(conf: ChangeflowSettings, max_message: int, max_frame: int) -> list[str]:
    """What disagrees between the settings and the server's limits (empty: nothing)."""
    problems = []
    accepted = accepted_bytes(max_message, max_frame)
    received = conf.max_frame_bytes
    if isinstance(received, int) and accepted is not None and received >= accepted:
        problems.append(
            f"CHANGEFLOW_MAX_FRAME_BYTES ({received}) is not below the largest message "
            f"the server accepts ({accepted} bytes): a frame between the two closes the "
            "connection (1009) instead of being answered too_large."
        )
    sent = conf.max_sent_frame_bytes
    if isinstance(sent, int) and 0 < max_message < sent:
        problems.append(
            f"CHANGEFLOW_MAX_SENT_FRAME_BYTES ({sent}) is above the largest message the "
            f"server sends ({max_message} bytes): such a frame closes the connection (4011)."
        )
    return problems


class FrameTooLarge(FrameError):
    """A frame over ``CHANGEFLOW_MAX_FRAME_BYTES``: answered ``too_large`` without being
    read, so without its ``id``; the answer carries the frame's ``size`` (bytes, UTF-8 for
    text), by which the client tells which of its requests it was."""

    def __init__(self, size: int, bound: int) -> None:
        super().__init__(TOO_LARGE, f"frame of {size} bytes; at most {bound}")
        self.size = size


def check_frame_size(text: str | None, data: bytes | None, bound: int) -> None:
    """Raise ``FrameTooLarge`` for a frame over ``bound`` bytes (a text frame's UTF-8 is
    counted only when its length could pass the bound: at most 4 bytes a character)."""
    if data is not None and len(data) > bound:
        raise FrameTooLarge(len(data), bound)
    if text is not None and len(text) * 4 > bound:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > bound:
            raise FrameTooLarge(size, bound)
