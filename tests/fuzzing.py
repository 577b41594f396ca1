"""Hostile input for the property-based tests (hypothesis), and a stand-in for the worker.

``WorkerStandIn`` receives what the websocket consumer sends to the worker's channel
on the in-memory layer, records every message that the worker would refuse (or that
the production layer, Redis with msgpack, could not carry) and answers valid pushes
as the worker does. It checks; it does not write anything.
"""

from __future__ import annotations

import asyncio
import json
import string
from typing import Any

import msgpack
from hypothesis import strategies as st

from changeflow_channels.pushes import (
    OPS,
    PUSH_TYPE,
    RESULT_TYPE,
    PushError,
    check_size,
    parse_push,
)
from changeflow_channels.sync import SYNC_TYPE, SyncError, parse_sync
from changeflow_channels.web.protocol import ACTIONS

ERROR_CODES = {"bad_request", "forbidden", "not_found", "too_large", "rate_limited", "unavailable"}
NAME_ALPHABET = string.ascii_letters + string.digits + "_-"


class Raw(str):
    """A JSON fragment written into a frame as it is (``NaN``, ``1e999``...)."""


def to_json(value: Any) -> str:
    """JSON text for ``value``; ``Raw`` fragments go in verbatim (so the text may be bad JSON)."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value)


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """Parse what a browser's ``JSON.parse`` accepts: no NaN / Infinity."""
    return json.loads(text, parse_constant=_refuse)


def stream_is_valid(stream: Any) -> bool:
    """The contract's rule, written independently of ``names.py``."""
    if not isinstance(stream, str) or len(stream) > 99 or stream.count(".") != 1:
        return False
    database, table = stream.split(".")
    return all(part and all(c in NAME_ALPHABET for c in part) for part in (database, table))


# -- values -----------------------------------------------------------------------

names = st.text(NAME_ALPHABET, min_size=1, max_size=12)
lone_surrogates = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
raw_numbers = st.sampled_from(
    [
        *("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "1E400", "0.5e1"),
        *("123456789012345678901234567890", "-99999999999999999999"),
    ]
).map(Raw)
texts = st.one_of(
    st.text(max_size=20),
    lone_surrogates,
    st.sampled_from(["", "$reql_type$", "\x00", "a\nb", "\u202e", "😀", "'; r.db_drop('x')"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    raw_numbers,
)
keys = st.one_of(st.text(max_size=8), st.sampled_from(["$reql_type$", "id", "", "data"]))
reql_pseudo_types = st.fixed_dictionaries(
    {"$reql_type$": st.sampled_from(["TIME", "BINARY", "GEOMETRY", "GROUPED_DATA", "X", ""])},
    optional={
        "epoch_time": st.floats(allow_nan=False, allow_infinity=False),
        "timezone": st.sampled_from(["+00:00", "Z", "bad"]),
        "data": st.text(max_size=10),
    },
)
json_values = st.recursive(
    st.one_of(scalars, reql_pseudo_types),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=16,
)
documents = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
plain_documents = st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=6),
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=10)),
    max_size=4,
)

# -- frame fields -----------------------------------------------------------------

common_streams = st.sampled_from(["db.t", "db.u", "shop.orders"])
valid_streams = st.one_of(common_streams, st.builds("{}.{}".format, names, names))
hostile_streams = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda a, sep, b: a + sep + b,
        names,
        st.sampled_from(
            [".", "/", "\\", " ", ":", "..", ".$", "\x00", "\n", "%2e", "\uff0e", "\u200b."]
        ),
        names,
    ),
    st.builds("{}.{}.{}".format, names, names, names),
    st.builds("{}.{}".format, st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8)),
    st.integers(96, 103).map(lambda n: "d." + "t" * (n - 2)),  # around the 99-character limit
    st.sampled_from(["", ".", "a.", ".b", "a.b\n", " a.b", "ä.b", "a.b\u200b", "\ud800.b", "*.*"]),
    json_values,
)
actions = st.one_of(
    st.sampled_from(ACTIONS),
    st.sampled_from(["Subscribe", "push ", "", "delete", "__init__", "changeflow.push"]),
    json_values,
)
ids = st.one_of(
    st.integers(0, 1_000_000), st.text(max_size=10), json_values, st.sampled_from([Raw("1e999")])
)
ops = st.one_of(st.sampled_from(OPS), st.sampled_from(["INSERT", "drop", "", "eval"]), json_values)
sinces = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "epoch": st.one_of(st.text(max_size=70), json_values),
            "seq": st.one_of(st.integers(-5, 2**70), json_values),
        },
    ),
    json_values,
)
filter_ops = st.one_of(
    st.sampled_from(["eq", "ne", "lt", "le", "gt", "ge", "in"]),
    st.sampled_from(["regex", "$where", "contains", "", "EQ", "match", "js", "__class__"]),
    st.text(max_size=6),
)
filters = st.one_of(
    st.dictionaries(
        st.text(max_size=6),
        st.one_of(scalars, st.dictionaries(filter_ops, json_values, max_size=3)),
        max_size=4,
    ),
    json_values,
)
subs = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4), json_values)


@st.composite
def frames(draw: Any) -> dict[str, Any]:
    """A frame shaped like a real one, any field of which may be hostile."""
    frame: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        frame["action"] = draw(st.sampled_from(ACTIONS) if draw(st.booleans()) else actions)
    if draw(st.integers(0, 9)):
        frame["stream"] = draw(common_streams if draw(st.booleans()) else hostile_streams)
    optional = {
        "id": ids,
        "data": st.one_of(documents, st.lists(documents, max_size=3), json_values),
        "op": ops,
        "key": json_values,
        "since": sinces,
        "filter": filters,
        "snapshot": json_values,
        "sub": subs,
    }
    for field in draw(st.sets(st.sampled_from(sorted(optional)), max_size=4)):
        frame[field] = draw(optional[field])
    return frame


def deep(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


raw_frames = st.one_of(
    st.text(max_size=50),
    st.sampled_from(["", "null", "[]", "{}", "1", '"x"', "{", '{"action":', "\ufeff{}", "NaN"]),
    st.builds(to_json, json_values),
    st.builds(deep, st.integers(1, 5000), st.sampled_from(["list", "dict"])),
    st.builds(
        lambda depth, kind: (
            '{"action":"push","stream":"db.t","id":1,"data":{"x":' + deep(depth, kind) + "}}"
        ),
        st.integers(15, 3000),
        st.sampled_from(["list", "dict"]),
    ),
)
binary_frames = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b'{"action":"subscribe"}']),
    st.builds(lambda frame: to_json(frame).encode("utf-8", "surrogatepass"), frames()),
)


# -- the worker's side ------------------------------------------------------------


def refusal(message: Any, max_document_bytes: int) -> str | None:
    """Why the worker (or Redis) would refuse ``message``; None if it is fine."""
    if not isinstance(message, dict):
        return "not a dict"
    try:
        msgpack.packb(message, use_bin_type=True)  # what channels_redis does with it
    except Exception as error:
        return f"the Redis layer cannot carry it: {error!r}"
    kind = message.get("type")
    if kind == PUSH_TYPE:
        try:
            request = parse_push(message)
            check_size(request.data, max_document_bytes)
            json.dumps(message, allow_nan=False, ensure_ascii=False).encode()
        except (PushError, ValueError) as error:
            return f"push refused: {error!r}"
        return None
    if kind == SYNC_TYPE:
        try:
            parse_sync(message)
        except SyncError as error:
            return f"sync request refused: {error!r}"
        return None
    return f"unknown message type {kind!r}"


class WorkerStandIn:
    """Receives on the worker's channel; records refusals; answers valid pushes."""

    def __init__(self, layer: Any, channel: str = "changeflow", max_document_bytes: int = 2**20):
        self.layer = layer
        self.channel = channel
        self.max_document_bytes = max_document_bytes
        self.received: list[dict[str, Any]] = []
        self.refused: list[tuple[Any, str]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WorkerStandIn:
        self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            self.received.append(message)
            problem = refusal(message, self.max_document_bytes)
            if problem is not None:
                self.refused.append((message, problem))
                continue
            if message["type"] == PUSH_TYPE and message.get("reply_channel"):
                request = parse_push(message)
                await self.layer.send(
                    request.reply_channel,
                    {
                        "type": RESULT_TYPE,
                        "id": request.id,
                        "ok": True,
                        "generated_keys": [],
                        "inserted": len(request.documents),
                        "replaced": 0,
                        "unchanged": 0,
                        "deleted": 0,
                        "skipped": 0,
                        "errors": 0,
                    },
                )
