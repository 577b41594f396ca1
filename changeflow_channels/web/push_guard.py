"""Checked pushes: a browser's write that the policy decides document by document.

When the connection's policy has ``can_write`` (``permissions.guards_writes``), a
push that writes over documents (``update``, ``replace``, ``delete``, ``upsert``)
goes through ``GuardedPush``:

1. ``Read``: the worker is asked for the documents the push would write over
   (``changeflow.push.read``, answered on the consumer's channel);
2. ``Check``: what each becomes is computed here (``pushes.new_document``:
   RethinkDB's merge for ``update``), and the policy is asked about each
   ``(key, new, old)``; one refusal refuses the push (``forbidden``, the same
   answer for a hidden document and a missing one);
3. ``Write``: the push goes to the worker with ``expect`` (``[key, old, new]`` per
   document): the worker writes each document only if it is still ``old``, so what
   was checked is exactly what is written over, and exactly what is written;
4. a document changed meanwhile (``conflict``) is read and checked again, at most
   ``MAX_ATTEMPTS`` times in all; then the push is answered ``conflict``.

Plain code, no I/O: the consumer (``web/pushing.py``) performs the actions, each
answer arriving as a message of its own through ``dispatch``. The documents read
never leave the consumer: the client gets counts, or an error without content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..pushes import (
    CONFLICT,
    INVALID,
    PUSH_TYPE,
    READ_TYPE,
    UNAVAILABLE,
    PushError,
    PushRequest,
    new_document,
    write_entries,
)
from ..pushes import NOT_FOUND as PUSH_NOT_FOUND
from .protocol import BAD_REQUEST, FORBIDDEN
from .protocol import NOT_FOUND as FRAME_NOT_FOUND
from .protocol import UNAVAILABLE as FRAME_UNAVAILABLE

MAX_ATTEMPTS = 3
COUNTS = ("inserted", "replaced", "unchanged", "deleted", "skipped", "errors")
# A guarded push whose worker did not answer in time (a ``LocalEvents`` timer).
GUARD_TIMEOUT_TYPE = "changeflow.push.guard_timeout"


@dataclass
class Read:
    """Send ``message`` (a ``changeflow.push.read``) to the worker."""

    message: dict[str, Any]


@dataclass
class Check:
    """Ask the policy about each ``(key, new, old)`` (raw documents), then call
    ``checked()`` with whether every one is allowed."""

    documents: list[tuple[Any, Any, Any]]


@dataclass
class Write:
    """Send ``message`` (a ``changeflow.push`` with ``expect``) to the worker."""

    message: dict[str, Any]


@dataclass
class Answer:
    """The push is done: send ``frame`` to the client."""

    frame: dict[str, Any]


Action = Read | Check | Write | Answer


def refused(request_id: Any, stream: str, op: str) -> dict[str, Any]:
    """The answer to a write the policy refused: the same whatever the reason."""
    return error_frame(FORBIDDEN, f"you may not {op} this document in {stream}", request_id)


def error_frame(code: str, message: str, request_id: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"event": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return frame


def frame_code(worker_code: Any) -> str:
    """The client's error code for a worker's answer code."""
    if worker_code == UNAVAILABLE:
        return FRAME_UNAVAILABLE
    if worker_code == CONFLICT:
        return CONFLICT
    if worker_code == PUSH_NOT_FOUND:
        return FRAME_NOT_FOUND
    return BAD_REQUEST


@dataclass
class GuardedPush:
    """One checked push, from its first read to its answer."""

    token: int
    request: PushRequest  # as the client sent it (``reply_channel``: the consumer's)
    attempts: int = 0
    # Indexes (into the push's entries) still to write; None: all of them.
    todo: list[int] | None = None
    expect: list[list[Any]] = field(default_factory=list)
    planned: list[int] = field(default_factory=list)  # expect's index -> entry index
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))

    @property
    def worker_id(self) -> dict[str, int]:
        """The ``id`` of its messages to the worker: never a client's (an object)."""
        return {"guard": self.token}

    def _message(self, kind: str) -> dict[str, Any]:
        request = self.request
        message: dict[str, Any] = {
            "type": kind,
            "database": request.database,
            "table": request.table,
            "data": request.data,
            "id": self.worker_id,
        }
        if request.op != "insert":
            message["op"] = request.op
        if request.key is not None:
            message["key"] = request.key
        if request.reply_channel is not None:
            message["reply_channel"] = request.reply_channel
        if request.idempotency_key is not None:
            message["idempotency_key"] = request.idempotency_key
        return message

    def start(self) -> Action:
        """The first action: read."""
        self.attempts += 1
        return Read(self._message(READ_TYPE))

    def read(self, answer: dict[str, Any]) -> Action:
        """The worker's read (``changeflow.push.read.result``)."""
        if not answer.get("ok"):
            return self._failed(answer)
        done = answer.get("done")
        if isinstance(done, dict):  # a retry of a push written already: its answer
            return self.result({**done, "conflicts": None})
        documents = answer.get("documents")
        try:
            entries = write_entries(self.request, str(answer.get("pk")))
        except PushError as error:
            return Answer(error_frame(BAD_REQUEST, str(error), self.request.id))
        if not isinstance(documents, list) or len(documents) != len(entries):
            return Answer(
                error_frame(FRAME_UNAVAILABLE, "the worker's read did not match", self.request.id)
            )
        self.planned = list(range(len(entries))) if self.todo is None else list(self.todo)
        self.expect = []
        for index in self.planned:
            key, part = entries[index]
            old = documents[index]
            self.expect.append([key, old, new_document(self.request.op, old, part)])
        return Check([(key, new, old) for key, old, new in self.expect])

    def checked(self, allowed: bool) -> Action:
        """The policy's verdict on every document of the last ``Check``."""
        request = self.request
        if not allowed:
            return Answer(refused(request.id, request.stream, request.op))
        message = self._message(PUSH_TYPE)
        message["expect"] = self.expect
        return Write(message)

    def result(self, answer: dict[str, Any]) -> Action:
        """The worker's answer to the ``Write`` (``changeflow.push.result``)."""
        if answer.get("ok") or answer.get("code") == CONFLICT:
            for name in COUNTS:
                value = answer.get(name)
                if isinstance(value, int):
                    self.counts[name] += value
        if answer.get("ok"):
            return Answer(self._pushed())
        conflicts = answer.get("conflicts")
        if answer.get("code") == CONFLICT and isinstance(conflicts, list) and conflicts:
            if self.attempts < MAX_ATTEMPTS:
                self.todo = [self.planned[i] for i in conflicts if 0 <= i < len(self.planned)]
                return self.start()
        return self._failed(answer)

    def timed_out(self) -> Answer:
        return Answer(
            error_frame(FRAME_UNAVAILABLE, "the worker did not answer in time", self.request.id)
        )

    def _pushed(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"event": "pushed"}
        if self.request.id is not None:
            frame["id"] = self.request.id
        frame.update(ok=True, generated_keys=[], **self.counts)
        return frame

    def _failed(self, answer: dict[str, Any]) -> Answer:
        code = answer.get("code")
        text = str(answer.get("error", "push failed"))
        if code == INVALID:
            return Answer(error_frame(BAD_REQUEST, text, self.request.id))
        return Answer(error_frame(frame_code(code), text, self.request.id))
