"""Per change, in the worker's feed: decoding the driver's response and building
the change, before (every document walked by ``json_safe``) and after (walked
only when the response's text holds ``$reql_type$``), in the same process.

The documents are about 1 KB each (nested objects and lists, no pseudo-types),
40 changes to a response as the driver reads them; a response with a time in
each document measures the walk that remains for those.
"""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from changeflow_channels.changes import build_change
from changeflow_channels.jsonsafe import RawDecoder, json_safe

NAME = "decode"
DESCRIPTION = "µs per change: feed response decode + change, before/after skipping json_safe"

PER_RESPONSE = 40


def document(n: int, *, with_time: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": f"user-{n:08d}",
        "name": "Ada Lovelace",
        "email": "ada@example.org",
        "n": n,
        "score": n * 1.5,
        "active": True,
        "tags": ["alpha", "beta", "gamma", "delta"],
        "address": {"street": "12 Analytical Row", "city": "London", "zip": "N1 9GU"},
        "items": [{"sku": f"S{k}", "qty": k, "price": 9.99, "opts": [k, k + 1]} for k in range(6)],
        "meta": {"source": "bench", "version": 3, "flags": {"a": 1, "b": None}},
    }
    if with_time:
        doc["at"] = {"$reql_type$": "TIME", "epoch_time": 1_700_000_000.5, "timezone": "+00:00"}
    return doc


def response_text(*, with_time: bool = False) -> str:
    items = [
        {
            "type": "change",
            "old_val": document(n, with_time=with_time),
            "new_val": document(n + 1, with_time=with_time),
        }
        for n in range(PER_RESPONSE)
    ]
    return json.dumps({"t": 3, "r": items}, separators=(",", ":"))


def before(text: str) -> None:
    """The old path: orjson, then ``json_safe`` on both documents of each change."""
    for item in orjson.loads(text)["r"]:
        {
            "type": item["type"],
            "old_val": json_safe(item.get("old_val")),
            "new_val": json_safe(item.get("new_val")),
        }


DECODER = RawDecoder()


def after(text: str) -> None:
    """Now: ``RawDecoder`` (walks only a response holding a pseudo-type), then the change."""
    for item in DECODER.decode(text)["r"]:
        build_change(item)


def decode_only(text: str) -> None:
    orjson.loads(text)


def per_change_us(path: Any, text: str, seconds: float) -> float:
    """Best of five rounds, µs per change."""
    rounds = []
    for _ in range(5):
        count = 0
        started = time.perf_counter()
        while time.perf_counter() - started < seconds / 5:
            path(text)
            count += PER_RESPONSE
        rounds.append((time.perf_counter() - started) / count * 1e6)
    return min(rounds)


async def run(quick: bool = False) -> dict[str, float]:
    seconds = 1.0 if quick else 5.0
    plain, timed = response_text(), response_text(with_time=True)
    return {
        "decode_orjson_us_per_change": per_change_us(decode_only, plain, seconds),
        "decode_before_us_per_change": per_change_us(before, plain, seconds),
        "decode_after_us_per_change": per_change_us(after, plain, seconds),
        "decode_after_with_times_us_per_change": per_change_us(after, timed, seconds),
    }
