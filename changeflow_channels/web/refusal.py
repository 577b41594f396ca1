"""Refusing a websocket so that its client can read why.

Daphne answers a websocket closed during its handshake with a bare ``403`` and drops
the reason of a close frame. So a refused connection is accepted, sent one ``error``
frame (a code and a message, as in the browser protocol), then closed with a close
code of its own (docs/protocol.md, "Close codes"); the close also carries the reason
for servers that pass it on. Nothing of the site is served before the close.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .protocol import encode, error_frame

# Close codes of connections ended (or refused) because of who or where they come from.
CLOSE_TOKEN_EXPIRED = 4001  # the token's lifetime (CHANGEFLOW_TOKEN_MAX_AGE) is over
CLOSE_TOKEN_INVALID = 4002  # not a valid token, or revoked (password changed, user deactivated)
CLOSE_ORIGIN = 4003  # an Origin not allowed, or no Origin without a token
CLOSE_TOO_MANY = 4004  # the token or user has CHANGEFLOW_TOKEN_CONNECTIONS connections open
CLOSE_UNAVAILABLE = 4012  # the user could not be checked (auth backend unreachable)

# Error codes of those refusals (``error`` frames).
UNAUTHORIZED = "unauthorized"


@dataclass(frozen=True)
class Refusal:
    close_code: int
    error_code: str
    message: str


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def refuse(receive: Receive, send: Send, refusal: Refusal) -> None:
    """Refuse a websocket still in its handshake: accept, one ``error`` frame, close."""
    message = await receive()
    if message.get("type") != "websocket.connect":
        return  # the client is gone already
    await send({"type": "websocket.accept"})
    frame = encode(error_frame(refusal.error_code, refusal.message))
    await send({"type": "websocket.send", "text": frame})
    reason = refusal.message[:120]  # a close reason is at most 123 bytes
    await send({"type": "websocket.close", "code": refusal.close_code, "reason": reason})
