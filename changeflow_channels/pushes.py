"""Push messages: what a ``changeflow.push`` may contain, checked before any write.

Shared by the senders (``push_to_flow``, the websocket consumer) and the worker,
so a bad push is refused with the same clear message wherever it comes from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .jsonsafe import is_unicode
from .names import InvalidName, stream_name

PUSH_TYPE = "changeflow.push"
RESULT_TYPE = "changeflow.push.result"
# A consumer asks the worker for the documents a push would write over (``push_guard``).
READ_TYPE = "changeflow.push.read"
READ_RESULT_TYPE = "changeflow.push.read.result"
# Several pushes of one process in one message (push_coalescer.py): {"pushes": [push, ...]}.
BATCH_TYPE = "changeflow.push.batch"
MAX_BATCH = 100
# Several answers to one reply channel in one message, for pushes that ask for it
# (``"batch_answers": true``): {"results": [result, ...]}, in the order received.
RESULTS_TYPE = "changeflow.push.results"
OPS = ("insert", "upsert", "update", "replace", "delete")
# The driver refuses deeper documents ("Nesting depth limit exceeded"); we say so first.
MAX_DEPTH = 20
REQL_TYPE_KEY = "$reql_type$"
# An idempotency key: any text of 1 to this many characters, chosen by the sender.
MAX_IDEMPOTENCY_KEY = 128


class PushError(ValueError):
    """A push that cannot be written; the message says why."""


class PushTooLarge(PushError):
    """A document (or list of them) over CHANGEFLOW_MAX_DOCUMENT_BYTES."""


def check_size(data: Any, limit: int) -> int:
    """Refuse data whose JSON is larger than ``limit`` bytes; return its size."""
    size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
    if size > limit:
        raise PushTooLarge(f"data is {size} bytes of JSON; at most {limit} are accepted")
    return size


@dataclass(frozen=True)
class PushRequest:
    database: str
    table: str
    data: Any
    op: str = "insert"
    key: Any = None
    reply_channel: str | None = None
    id: Any = None
    # Pushes into one table with one key are written once (worker/idempotency.py).
    idempotency_key: str | None = None
    # A checked write (web/push_guard.py): [key, old, new] per document, each written
    # only if the document is still ``old`` (compare-and-swap); None: a plain write.
    expect: list[list[Any]] | None = None

    @property
    def stream(self) -> str:
        return f"{self.database}.{self.table}"

    @property
    def documents(self) -> list[Any]:
        """``data`` as a list (a single document becomes a list of one)."""
        if self.data is None:
            return []
        return self.data if isinstance(self.data, list) else [self.data]


def check_json(value: Any, path: str = "data", depth: int = 0) -> None:
    """Refuse anything that is not plain JSON (and ReQL pseudo-types smuggled in)."""
    if depth > MAX_DEPTH:
        raise PushError(f"{path} is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        raise PushError(
            f"{path} is an integer beyond 64 bits, which the channel layer cannot carry"
        )
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise PushError(f"{path} is {value}, which JSON cannot carry")
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PushError(f"{path} has a non-string key {key!r}")
            _check_text(key, f"a key of {path}")
            if key == REQL_TYPE_KEY:
                raise PushError(f"{path} uses the reserved key {REQL_TYPE_KEY!r}")
            check_json(item, f"{path}.{key}", depth + 1)
        return
    raise PushError(f"{path} is a {type(value).__name__}, which is not JSON")


def check_expect(expect: Any) -> None:
    """``expect`` is a list of ``[key, old, new]``: a key, and two documents or nulls
    (raw ReQL pseudo-types allowed: they are what the worker read)."""
    if not isinstance(expect, list) or not expect:
        raise PushError("expect must be a non-empty list of [key, old, new]")
    for index, entry in enumerate(expect):
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise PushError(f"expect[{index}] must be [key, old, new]")
        _check_key(entry[0])
        for document in entry[1:]:
            if document is not None and not isinstance(document, dict):
                raise PushError(f"expect[{index}] must hold documents (objects) or nulls")


def _check_text(text: str, path: str) -> None:
    if not is_unicode(text):
        raise PushError(f"{path} is not valid Unicode text (a lone surrogate)")


def _check_key(key: Any) -> None:
    if isinstance(key, bool) or not isinstance(key, str | int | float | list):
        raise PushError(f"key must be a string, a number or an array, not {key!r}")
    check_json(key, "key")


def check_idempotency_key(value: Any) -> None:
    """An idempotency key is a string of 1 to ``MAX_IDEMPOTENCY_KEY`` characters."""
    if not isinstance(value, str) or not value:
        raise PushError(f"idempotency_key must be a non-empty string, not {value!r}")
    if len(value) > MAX_IDEMPOTENCY_KEY:
        raise PushError(
            f"idempotency_key is {len(value)} characters long; at most "
            f"{MAX_IDEMPOTENCY_KEY} are accepted"
        )
    _check_text(value, "idempotency_key")


def _check_documents(data: Any, op: str) -> None:
    if isinstance(data, dict):
        return
    if isinstance(data, list):
        if not data:
            raise PushError(f"{op} needs at least one document; data is an empty list")
        for index, document in enumerate(data):
            if not isinstance(document, dict):
                raise PushError(
                    f"data[{index}] must be an object (a document), not {type(document).__name__}"
                )
        return
    raise PushError(f"data must be an object or a list of objects, not {type(data).__name__}")


def parse_push(message: Any) -> PushRequest:
    """Validate a push message and return it as a ``PushRequest``."""
    if not isinstance(message, dict):
        raise PushError(f"a push must be a dict, not {type(message).__name__}")
    try:
        stream_name(message.get("database"), message.get("table"))
    except InvalidName as error:
        raise PushError(str(error)) from None
    op = message.get("op") or "insert"
    if op not in OPS:
        raise PushError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
    reply_channel = message.get("reply_channel")
    if reply_channel is not None and (not isinstance(reply_channel, str) or not reply_channel):
        raise PushError("reply_channel must be a channel name")
    key = message.get("key")
    data = message.get("data")
    check_json(data)
    check_json(message.get("id"), "id")
    if key is not None:
        _check_key(key)
    idempotency_key = message.get("idempotency_key")
    if idempotency_key is not None:
        check_idempotency_key(idempotency_key)
    expect = message.get("expect")
    if expect is not None:
        check_expect(expect)
    if not isinstance(message.get("batch_answers", False), bool):
        raise PushError("batch_answers must be true or false")
    if op in ("insert", "upsert"):
        _check_documents(data, op)
    elif op in ("update", "replace"):
        if key is not None:
            if not isinstance(data, dict):
                raise PushError(f"{op} with a key needs one document (an object) as data")
        elif data is None:
            raise PushError(f"{op} needs a key, or documents that carry their primary key")
        else:
            _check_documents(data, op)
    elif key is None:  # delete
        if data is None:
            raise PushError("delete needs a key, or documents (or keys) to delete")
        if not isinstance(data, dict | list) or data == []:
            raise PushError("delete data must be a document or a list of documents or keys")
    return PushRequest(
        database=message["database"],
        table=message["table"],
        data=data,
        op=op,
        key=key,
        reply_channel=reply_channel,
        id=message.get("id"),
        idempotency_key=idempotency_key,
        expect=[list(entry) for entry in expect] if expect is not None else None,
    )


def batch_pushes(message: dict[str, Any]) -> list[Any]:
    """The pushes of a ``changeflow.push.batch`` (raises ``PushError`` for a batch
    that is not a list of 1 to ``MAX_BATCH`` messages). Each push is checked on its
    own, as any ``changeflow.push``."""
    pushes = message.get("pushes")
    if not isinstance(pushes, list) or not pushes:
        raise PushError("a batch needs pushes: a non-empty list of push messages")
    if len(pushes) > MAX_BATCH:
        raise PushError(f"a batch holds at most {MAX_BATCH} pushes, not {len(pushes)}")
    return pushes


def build_push(
    database: str,
    table: str,
    data: Any,
    *,
    op: str = "insert",
    key: Any = None,
    reply_channel: str | None = None,
    id: Any = None,
    idempotency_key: str | None = None,
    expect: list[list[Any]] | None = None,
    batch_answers: bool = False,
) -> dict[str, Any]:
    """The ``changeflow.push`` message, validated (raises ``PushError``).
    ``batch_answers``: its answer may come in a ``changeflow.push.results``."""
    message: dict[str, Any] = {
        "type": PUSH_TYPE,
        "database": database,
        "table": table,
        "data": data,
    }
    if op != "insert":
        message["op"] = op
    if key is not None:
        message["key"] = key
    if reply_channel is not None:
        message["reply_channel"] = reply_channel
    if id is not None:
        message["id"] = id
    if idempotency_key is not None:
        message["idempotency_key"] = idempotency_key
    if expect is not None:
        message["expect"] = expect
    if batch_answers:
        message["batch_answers"] = True
    parse_push(message)
    return message


# Why a push was not written: the ``code`` of its result.
INVALID = "invalid"  # refused before writing: not a valid push (fix the push)
REJECTED = "rejected"  # RethinkDB refused the write: a duplicate key, a query error
UNAVAILABLE = "unavailable"  # not written for now: RethinkDB unreachable, an internal error
# A checked write (``expect``) found a document changed since it was read: not written.
CONFLICT = "conflict"
# An update found no document under its key (RethinkDB: ``skipped``): nothing was written.
NOT_FOUND = "not_found"
ERROR_CODES = (INVALID, REJECTED, UNAVAILABLE, CONFLICT, NOT_FOUND)


def error_result(request_id: Any, error: str, code: str) -> dict[str, Any]:
    """The ``changeflow.push.result`` of a push not written: ``error`` says what went
    wrong, ``code`` (one of ``ERROR_CODES``) what the sender can do about it."""
    return {"type": RESULT_TYPE, "id": request_id, "ok": False, "error": error, "code": code}


def write_entries(request: PushRequest, pk: str) -> list[tuple[Any, Any]]:
    """The documents an ``update``, ``replace``, ``delete`` or ``upsert`` writes over,
    each as ``(key, part)``: ``part`` is the push's document for that key, its primary
    key set (None for a delete). ``pk``: the table's primary key field. Raises
    ``PushError`` (a document without its key, a key given twice, ...)."""
    op, key = request.op, request.key
    entries: list[tuple[Any, Any]] = []
    if op == "insert":
        raise PushError("an insert writes over no document")
    if op == "delete" and key is not None:
        entries = [(key, None)]
    elif op == "delete":
        for doc in request.documents:
            found = doc.get(pk) if isinstance(doc, dict) else doc
            if found is None:
                raise PushError(f"delete: every document needs its primary key `{pk}`")
            _check_key(found)
            entries.append((found, None))
    elif key is not None and op in ("update", "replace"):
        doc = dict(request.data)
        if pk in doc and doc[pk] != key:
            raise PushError(f"{op}: the document's `{pk}` differs from key {key!r}")
        entries = [(key, {**doc, pk: key})]
    else:
        for index, doc in enumerate(request.documents):
            if pk not in doc:
                raise PushError(
                    f"{op}: document {index} has no primary key `{pk}`"
                    + (" and no key given" if op != "upsert" else "")
                )
            _check_key(doc[pk])
            entries.append((doc[pk], doc))
    seen: list[Any] = []
    for found, _ in entries:
        if found in seen:
            raise PushError(f"{op}: key {found!r} is given twice")
        seen.append(found)
    return entries


def merge(old: Any, part: Any) -> Any:
    """RethinkDB's ``merge`` (what ``update`` does): objects merged recursively,
    anything else in ``part`` taking the place of what ``old`` has."""
    if not isinstance(old, dict) or not isinstance(part, dict):
        return part
    merged = dict(old)
    for name, value in part.items():
        merged[name] = merge(old[name], value) if name in old else value
    return merged


def new_document(op: str, old: Any, part: Any) -> Any:
    """What the document of one entry (``write_entries``) becomes: None for none
    (deleted, or an update of a missing document: nothing written)."""
    if op == "delete":
        return None
    if op == "replace":
        return part
    if old is None:
        return part if op == "upsert" else None
    return merge(old, part)
