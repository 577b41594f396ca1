"""Limits per connection: rates, and how much may be sent before the client reads."""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take()`` spends one."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.updated = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class AckError(ValueError):
    """An ``ack`` that acknowledges frames never sent."""


class SendWindow:
    """Flow control that does not rely on the ASGI server (Daphne takes every frame at
    once and buffers it). The client acknowledges the frames it has read (``ack``:
    how many since the connection opened); at most ``frames`` frames, and about
    ``size`` bytes, are sent and not yet acknowledged. A frame larger than ``size``
    still goes when nothing else is in flight."""

    def __init__(self, frames: int, size: int) -> None:
        self.frames = frames
        self.size = size
        self.sent_count = 0  # frames sent since the connection opened
        self.acked_count = 0
        self.in_flight: deque[int] = deque()  # sizes of the frames not acknowledged
        self.in_flight_bytes = 0

    def may_send(self, size: int) -> bool:
        if not self.in_flight:
            return True
        return len(self.in_flight) < self.frames and self.in_flight_bytes + size <= self.size

    def sent(self, size: int) -> None:
        self.sent_count += 1
        self.in_flight.append(size)
        self.in_flight_bytes += size

    def acked(self, count: int) -> bool:
        """The client has read ``count`` frames in all; whether that frees any of the
        window (an older, smaller count is stale and changes nothing)."""
        if count > self.sent_count:
            raise AckError(f"ack of {count} frames; {self.sent_count} were sent")
        if count <= self.acked_count:
            return False
        for _ in range(count - self.acked_count):
            self.in_flight_bytes -= self.in_flight.popleft()
        self.acked_count = count
        return True
