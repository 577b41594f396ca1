"""An attacking client in a process of its own (tests/security/test_amplification.py):
``python -m tests.security.amplifier URL SECONDS`` with the handshake's keyword arguments,
the frames to send and the connections to send them on as JSON on stdin. It sends the
frames at once, then reads (and acknowledges) everything for SECONDS, and prints what it
got as one JSON line. Apart
from the test process, so that reading megabytes does not delay the client whose
latency the test measures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any


async def attack(url: str, seconds: float, kwargs: dict[str, Any], frames: list[str]) -> dict:
    """One connection's attack: its frames at once, then all it gets for ``seconds``."""
    import websockets

    received = read = 0
    events: dict[str, int] = {}
    close_code = None
    async with websockets.connect(url, max_size=None, **kwargs) as connection:
        for text in frames:
            await connection.send(text)
        with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
            async with asyncio.timeout(seconds):
                async for answer in connection:
                    received += len(answer)
                    read += 1
                    if len(answer) > 10_000:  # a part of a snapshot, or a batch: not parsed
                        event = answer[:30]  # (parsing megabytes would slow the test's host)
                    else:
                        frame = json.loads(answer)
                        event = frame.get("code") or frame.get("event")
                    events[event] = events.get(event, 0) + 1
                    await connection.send(json.dumps({"action": "ack", "frames": read}))
        close_code = connection.close_code
    return {"bytes": received, "frames": read, "events": events, "close_code": close_code}


async def attacks(url: str, seconds: float, given: dict[str, Any]) -> dict:
    """``given["frames"]`` split over ``given["connections"]`` connections (1 unless
    said), all at once; what they got, added up."""
    count = given.get("connections", 1)
    frames = given["frames"]
    shares = [frames[n::count] for n in range(count)]
    results = await asyncio.gather(
        *(attack(url, seconds, given["kwargs"], share) for share in shares)
    )
    total: dict[str, Any] = {"bytes": 0, "frames": 0, "events": {}, "close_code": []}
    for result in results:
        total["bytes"] += result["bytes"]
        total["frames"] += result["frames"]
        for event, n in result["events"].items():
            total["events"][event] = total["events"].get(event, 0) + n
        total["close_code"].append(result["close_code"])
    if count == 1:
        total["close_code"] = total["close_code"][0]
    return total


def main() -> None:
    url, seconds = sys.argv[1], float(sys.argv[2])
    result = asyncio.run(attacks(url, seconds, json.load(sys.stdin)))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
