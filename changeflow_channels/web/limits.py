"""Limits per connection: rates, and how much may be sent before the client reads."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .protocol import RATE_LIMITED, FrameError


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``take()`` spends one.
    ``clock``: seconds, monotonic (tests give their own)."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock()

    def available(self) -> float:
        """The tokens there are now."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens

    def take(self) -> bool:
        if self.available() < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        return max(0.0, (1 - self.available()) / self.rate)


class RateLimited(FrameError):
    """A request beyond a rate: ``rate_limited``, with the seconds after which the same
    request would be taken (``retry_after`` in the error frame)."""

    def __init__(self, message: str, retry_after: float, request_id: Any = None) -> None:
        super().__init__(RATE_LIMITED, message, request_id)
        self.retry_after = retry_after


# Seconds after which a snapshot or resume refused because another of the same stream is
# under way on the connection may be asked again.
SYNC_BUSY_RETRY = 1.0


class SubscribeLimits:
    """What subscribing costs a connection: every subscribe frame (subscribing again to
    the same stream too) spends a token of ``subscribe_rate`` a second (bursts of twice
    that); one that asks for a snapshot or resumes (``since``) also spends a token of
    ``sync_rate`` a second (bursts of ``sync_burst``): those make the worker read a table
    or its history, and send it all. And a stream has one of those under way per
    connection at a time (``busy``: another subscription of the connection to the same
    stream waits for its answer). Nothing is spent by a refused request."""

    def __init__(
        self,
        subscribe_rate: float,
        sync_rate: float,
        sync_burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subscribes = TokenBucket(subscribe_rate, max(1.0, 2 * subscribe_rate), clock)
        self.syncs = TokenBucket(sync_rate, max(1.0, float(sync_burst)), clock)

    def spend(self, *, sync: bool, busy: bool = False, request_id: Any = None) -> None:
        """Take a subscribe (and a ``sync``'s) token, or raise ``RateLimited``."""
        if sync and busy:
            raise RateLimited(
                "a snapshot or resume of this stream is under way on this connection",
                SYNC_BUSY_RETRY,
                request_id,
            )
        if self.subscribes.available() < 1:
            raise RateLimited(
                f"at most {self.subscribes.rate:g} subscribes per second",
                round(self.subscribes.wait(), 3),
                request_id,
            )
        if sync and self.syncs.available() < 1:
            raise RateLimited(
                f"at most {self.syncs.rate:g} snapshots or resumes (since) per second",
                round(self.syncs.wait(), 3),
                request_id,
            )
        self.subscribes.take()
        if sync:
            self.syncs.take()


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
