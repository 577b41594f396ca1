"""The delivery limit: text frames/s that a bare Channels consumer (``bench.bare_consumer``)
sends through Daphne to the benchmark's websocket clients."""

from __future__ import annotations

from . import driver, stack

NAME = "ceiling_ws"
DESCRIPTION = "frames/s from a bare Channels consumer through Daphne to the clients"

CLIENTS = 100  # as many as the fan-out's sustained measure (fanout.SUSTAINED_CLIENTS)


async def run(quick: bool = False) -> dict[str, float]:
    total = 20_000 if quick else 60_000
    url = stack.get().bare_url
    async with driver.ClientProcess() as clients:
        one = await clients.request("bare", url=url, n=1, count=total)
        many = await clients.request("bare", url=url, n=CLIENTS, count=total // CLIENTS)
    return {
        "ceiling_ws_frames_per_s": many["frames_per_s"],
        "ceiling_ws_frames_per_s_1_client": one["frames_per_s"],
        "ceiling_ws_clients": CLIENTS,
    }
