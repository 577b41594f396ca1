"""The browser protocol: JSON text frames on ``ws/changeflow/`` (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from typing import Any

import orjson

from ..jsonsafe import is_unicode
from ..names import InvalidName, parse_stream

BAD_REQUEST = "bad_request"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"

ACTIONS = ("subscribe", "unsubscribe", "push", "ack")
# The resync reason of a subscription whose change could not be made into a frame.
SEND_FAILED = "send_failed"


class FrameError(Exception):
    """A frame we answer with an ``error`` event; the connection stays open."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


def valid_request_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= 200 and is_unicode(value)
    if isinstance(value, int):
        return -(2**53) <= value <= 2**53  # what a browser's JSON.parse keeps exactly
    if isinstance(value, float):
        return math.isfinite(value)
    return False


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; echoed back, they would break the browser's parser.
    raise ValueError(f"{name} is not JSON")


def parse_frame(text: str | None) -> dict[str, Any]:
    """Decode a client frame and check its action and stream."""
    if text is None:
        raise FrameError(BAD_REQUEST, "frames must be JSON text, not binary")
    try:
        frame = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise FrameError(BAD_REQUEST, f"frame is not valid JSON: {error}") from None
    if not isinstance(frame, dict):
        raise FrameError(BAD_REQUEST, f"frame must be a JSON object, not {type(frame).__name__}")
    request_id = frame.get("id")
    if not valid_request_id(request_id):
        raise FrameError(BAD_REQUEST, "id must be a short string or a finite number")
    action = frame.get("action")
    if action not in ACTIONS:
        raise FrameError(
            BAD_REQUEST,
            f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}",
            request_id,
        )
    if action == "ack":
        count = frame.get("frames")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 2**53:
            raise FrameError(BAD_REQUEST, "ack needs frames: the frames read so far", request_id)
        return frame
    try:
        parse_stream(frame.get("stream"))
    except InvalidName as error:
        raise FrameError(BAD_REQUEST, str(error), request_id) from None
    return frame


def error_frame(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"event": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return frame


def batch_text(events: str) -> str:
    """The ``batch`` frame around ``events``, the JSON text of an array of frames."""
    return f'{{"event":"batch","events":{events}}}'


# What a ``batch`` frame adds around its events.
BATCH_OVERHEAD = len(batch_text("[]"))


def byte_size(text: str) -> int:
    """The size of ``text`` on the wire (UTF-8)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def fits(text: str, bound: int) -> bool:
    """Whether ``text`` is at most ``bound`` bytes (without encoding it, mostly)."""
    return len(text) * 4 <= bound or byte_size(text) <= bound


def pack(frames: list[tuple[str, float | None]], bound: int) -> list[tuple[str, float | None]]:
    """Consecutive frames ``(text, read_at)`` as few frames as fit within ``bound``
    bytes each: alone, or several in a ``batch`` frame (with the first ``read_at``).
    A frame larger than ``bound`` by itself stays as it is (the caller's to avoid)."""
    packed: list[tuple[str, float | None]] = []
    group: list[tuple[str, float | None]] = []
    size = BATCH_OVERHEAD

    def flush() -> None:
        if len(group) == 1:
            packed.append(group[0])
        elif group:
            read_at = next((at for _, at in group if at is not None), None)
            events = ",".join(text for text, _ in group)
            packed.append((batch_text(f"[{events}]"), read_at))

    for text, read_at in frames:
        cost = byte_size(text) + 1
        if group and size + cost > bound:
            flush()
            group, size = [], BATCH_OVERHEAD
        group.append((text, read_at))
        size += cost
    flush()
    return packed


def snapshot_texts(frame: dict[str, Any], bound: int) -> tuple[list[str], int]:
    """A ``snapshot`` frame as JSON texts of at most ``bound`` bytes each, and how
    many of its documents were left out, each too large for any frame.

    One text when it fits; otherwise the documents in order, spread over frames
    that carry ``part`` (0, 1, ...) and ``last`` (true on the final one) besides
    the snapshot's other fields (docs/protocol.md). Each document is encoded once;
    ``documents`` comes last in each frame."""
    result: list[tuple[list[str], int]] = []
    for _ in _snapshot_steps(frame, bound, result):
        pass
    return result[0]


async def snapshot_texts_async(frame: dict[str, Any], bound: int) -> tuple[list[str], int]:
    """``snapshot_texts``, letting the event loop run every ``STEP_BYTES`` or so: a
    table's snapshot is megabytes of JSON, encoded on the loop every client of the
    process shares (16 MB took 25 ms at once: other clients' changes waited)."""
    result: list[tuple[list[str], int]] = []
    for _ in _snapshot_steps(frame, bound, result):
        await asyncio.sleep(0)
    return result[0]


# About how many bytes of a snapshot are encoded between two turns of the event loop.
STEP_BYTES = 1_000_000


def _snapshot_steps(
    frame: dict[str, Any], bound: int, result: list[tuple[list[str], int]]
) -> Iterator[None]:
    """``snapshot_texts``'s work, pausing (a ``yield``) after each ``STEP_BYTES`` or so;
    its answer is appended to ``result``."""
    header = {key: value for key, value in frame.items() if key != "documents"}
    documents: list[str] = []
    step = 0
    for document in frame["documents"]:
        documents.append(encode(document))
        step += len(documents[-1])
        if step >= STEP_BYTES:
            step = 0
            yield
    sizes = [byte_size(text) + 1 for text in documents]  # with its comma
    head = encode(header)
    if byte_size(head) + len(',"documents":[]') + sum(sizes) <= bound:
        result.append(([_with_documents(head, documents)], 0))
        return
    base = byte_size(_with_documents(encode({**header, "part": 2**53, "last": False}), []))
    parts: list[list[str]] = [[]]
    size = base
    left_out = 0
    for text, cost in zip(documents, sizes, strict=True):
        if base + cost > bound:
            left_out += 1
            continue
        if parts[-1] and size + cost > bound:
            parts.append([])
            size = base
        parts[-1].append(text)
        size += cost
    last = len(parts) - 1
    texts = []
    for n, chunk in enumerate(parts):
        texts.append(_with_documents(encode({**header, "part": n, "last": n == last}), chunk))
        yield
    result.append((texts, left_out))


def _with_documents(header_text: str, documents: list[str]) -> str:
    """The JSON text of an object (``header_text``, not empty) with ``documents`` (JSON
    texts) as its last field."""
    return f'{header_text[:-1]},"documents":[{",".join(documents)}]}}'


def too_large_frame(stream: str, what: str, bound: int, epoch: Any, seq: Any) -> dict[str, Any]:
    """The ``error`` frame (``too_large``) sent instead of what exceeds the bound:
    ``epoch`` and ``seq`` say where it was (a change's, or the snapshot's)."""
    return {
        "event": "error",
        "code": TOO_LARGE,
        "stream": stream,
        "message": f"{what} of {stream} is larger than {bound} bytes as a frame: "
        "not sent; reload it by other means",
        "epoch": epoch,
        "seq": seq,
    }


def change_frame(message: dict[str, Any]) -> dict[str, Any]:
    """A ``changeflow.change`` channel message as the browser sees it."""
    change = message["change"]
    return {
        "event": "change",
        "stream": f"{message['database']}.{message['table']}",
        "type": change["type"],
        "old_val": change.get("old_val"),
        "new_val": change.get("new_val"),
        "epoch": message["epoch"],
        "seq": message["seq"],
    }


# One encoder for every frame: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def encode(frame: Any) -> str:
    """A frame (or a list of frames) as compact JSON text.

    orjson first: encoding change frames was a third of Daphne's CPU time at
    saturation, and orjson is about nine times faster here. What it refuses
    (lone surrogates, integers beyond 64 bits, keys that are not strings) goes
    through the standard encoder, as before."""
    try:
        return orjson.dumps(frame).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _ENCODER.encode(frame)
