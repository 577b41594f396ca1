"""The consumer's pushes: a browser's ``push`` frame checked (op, policy, rate, size)
and sent to the worker, and the worker's answer turned into a ``pushed`` or ``error``
frame. Under a policy with ``can_write``, each document is checked too: inserts here,
writes over documents through ``push_guard.GuardedPush``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..names import parse_stream
from ..permissions import ask, guards_writes, may_write
from ..push_coalescer import coalescer_for
from ..pushes import OPS, PushError, PushTooLarge, build_push, check_size, parse_push
from ..redis_layer import LAYER_ERRORS
from .limits import RateLimited
from .protocol import (
    BAD_REQUEST,
    FORBIDDEN,
    TOO_LARGE,
    UNAVAILABLE,
    FrameError,
    error_frame,
)
from .push_guard import (
    GUARD_TIMEOUT_TYPE,
    Action,
    Answer,
    Check,
    GuardedPush,
    Read,
    Write,
    frame_code,
    refused,
)

logger = logging.getLogger(__name__)


class PushMixin:
    """Pushes of ``ChangeflowConsumer`` (which provides ``policy``, ``user``,
    ``settings``, ``push_bucket``, ``channel_layer``, ``channel_name`` and ``send_frame``)."""

    policy: Any
    settings: Any
    push_bucket: Any
    channel_layer: Any
    channel_name: str
    user: Any
    events: Any  # LocalEvents
    send_frame: Callable[..., Awaitable[None]]  # the consumer's: (frame, read_at=None)
    _guard_tokens = itertools.count(1)
    guarded_pushes: dict[int, GuardedPush]

    async def _push(self, frame: dict[str, Any]) -> None:
        stream, request_id = frame["stream"], frame.get("id")
        op = frame.get("op") or "insert"
        if op not in OPS:  # checked before the policy sees it
            raise FrameError(
                BAD_REQUEST, f"unknown op {op!r}; expected one of {', '.join(OPS)}", request_id
            )
        if not await ask(self.policy.can_push, self.user, stream, op):
            raise FrameError(FORBIDDEN, f"you may not push into {stream}", request_id)
        if not self.push_bucket.take():
            # Told when to come back, like a subscribe: a burst of honest pushes is no abuse.
            raise RateLimited(
                f"at most {self.settings.push_rate:g} pushes per second",
                round(self.push_bucket.wait(), 3),
                request_id,
            )
        database, table = parse_stream(stream)
        try:
            message = build_push(
                database,
                table,
                frame.get("data"),
                op=op,
                key=frame.get("key"),
                reply_channel=self.channel_name,
                id=request_id,
                idempotency_key=frame.get("idempotency_key"),
                batch_answers=True,
            )
            size = check_size(message["data"], self.settings.max_document_bytes)
        except PushTooLarge as error:
            raise FrameError(TOO_LARGE, str(error), request_id) from None
        except PushError as error:
            raise FrameError(BAD_REQUEST, str(error), request_id) from None
        if guards_writes(self.policy):
            if op != "insert":
                await self._start_guarded(message)
                return
            for document in parse_push(message).documents:
                if not await self._may_write(stream, op, None, document, None, request_id):
                    raise FrameError(FORBIDDEN, refused(None, stream, op)["message"], request_id)
        # With the pushes of every other consumer of this process waiting at the moment.
        coalescer = coalescer_for(self.channel_layer, self.settings.channel)
        await self._send_to_worker(message, request_id, lambda: coalescer.send(message, size))

    async def _send_to_worker(
        self,
        message: dict[str, Any],
        request_id: Any,
        send: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        try:
            if send is not None:
                await send()
            else:
                await self.channel_layer.send(self.settings.channel, message)
        except LAYER_ERRORS as error:
            raise FrameError(
                UNAVAILABLE, f"channel layer unavailable: {error!r}", request_id
            ) from None

    async def _may_write(
        self, stream: str, op: str, key: Any, new: Any, old: Any, request_id: Any
    ) -> bool:
        """The policy's ``can_write``; a row rule or policy that fails is ``unavailable``
        (logged without the document)."""
        try:
            return await may_write(self.policy, self.user, stream, op, key, new, old)
        except Exception as error:  # the policy's boundary (a row rule that raised too)
            logger.warning(
                "%s.can_write failed on %s (%s)",
                type(self.policy).__name__,
                stream,
                type(error.__cause__ or error).__name__,
            )
            raise FrameError(
                UNAVAILABLE, f"the policy could not decide this write into {stream}", request_id
            ) from None

    # -- checked pushes (push_guard.py) --------------------------------------------

    async def _start_guarded(self, message: dict[str, Any]) -> None:
        guard = GuardedPush(next(self._guard_tokens), parse_push(message))
        self._guards()[guard.token] = guard
        await self._perform_guarded(guard, guard.start())

    def _guards(self) -> dict[int, GuardedPush]:
        guards: dict[int, GuardedPush] | None = getattr(self, "guarded_pushes", None)
        if guards is None:
            guards = {}
            self.guarded_pushes = guards
        return guards

    def _guard_of(self, message: dict[str, Any]) -> GuardedPush | None:
        worker_id = message.get("id")
        if not isinstance(worker_id, dict):
            return None
        return self._guards().get(worker_id.get("guard"))  # type: ignore[arg-type]

    async def _perform_guarded(self, guard: GuardedPush, action: Action) -> None:
        """Perform ``guard``'s actions until it waits for the worker or is done."""
        request = guard.request
        timer = (guard.token, GUARD_TIMEOUT_TYPE)
        while True:
            if isinstance(action, Read | Write):
                self.events.later(
                    self.settings.push_timeout + 5,
                    {"type": GUARD_TIMEOUT_TYPE, "token": guard.token},
                    key=timer,
                )
                try:
                    await self._send_to_worker(action.message, request.id)
                except FrameError as error:
                    action = Answer(error_frame(error.code, error.message, request.id))
                    continue
                return
            if isinstance(action, Check):
                allowed = True
                try:
                    for key, new, old in action.documents:
                        if not await self._may_write(
                            request.stream, request.op, key, new, old, request.id
                        ):
                            allowed = False
                            break
                except FrameError as error:
                    action = Answer(error_frame(error.code, error.message, request.id))
                    continue
                action = guard.checked(allowed)
                continue
            self._guards().pop(guard.token, None)
            self.events.cancel(timer)
            await self.send_frame(action.frame)
            return

    async def changeflow_push_read_result(self, message: dict[str, Any]) -> None:
        guard = self._guard_of(message)
        if guard is not None:  # else: answered already (timed out)
            await self._perform_guarded(guard, guard.read(message))

    async def changeflow_push_guard_timeout(self, message: dict[str, Any]) -> None:
        guard = self._guards().get(message.get("token"))  # type: ignore[arg-type]
        if guard is not None:
            await self._perform_guarded(guard, guard.timed_out())

    async def changeflow_push_results(self, message: dict[str, Any]) -> None:
        """Several answers at once (pushes sent with ``batch_answers``), in order."""
        results = message.get("results")
        for result in results if isinstance(results, list) else []:
            if isinstance(result, dict):
                await self.changeflow_push_result(result)

    async def changeflow_push_result(self, message: dict[str, Any]) -> None:
        guard = self._guard_of(message)
        if guard is not None:
            await self._perform_guarded(guard, guard.result(message))
            return
        if isinstance(message.get("id"), dict):
            return  # a checked push's late answer, answered already (timed out)
        request_id = message.get("id")
        if message.get("ok"):
            frame = {key: value for key, value in message.items() if key != "type"}
            await self.send_frame({"event": "pushed", **frame})
            return
        error = str(message.get("error", "push failed"))
        # The worker's code says whether trying again may help; its text is for people.
        await self.send_frame(error_frame(frame_code(message.get("code")), error, request_id))
