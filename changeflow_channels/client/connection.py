"""``ChangeflowClient``: the connection that stays up (reconnects, resumes, acknowledges,
retries pushes); see the package's doc."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import uuid
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.typing import Origin

from .subscription import ChangeflowError, Subscription

logger = logging.getLogger(__name__)

ACK_EVERY = 32  # frames; and ACK_AFTER seconds after the last frame not yet acknowledged
ACK_AFTER = 0.05
# Codes after which trying again may help (docs/protocol.md, "Error codes").
RETRYABLE = ("unavailable", "timeout", "rate_limited")
# Close codes of a site that refuses this client until something changes (a new token, an
# allowed origin): docs/protocol.md, "Close codes". The client stops; 4004 (too many
# connections) and 4012 (identity not checkable now) are tried again with backoff.
FINAL_CLOSES = (4001, 4002, 4003)


def origin_of(url: str) -> str:
    """The Origin a browser on the site of ``url`` would send (ws -> http, wss -> https)."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return f"{scheme}://{parts.netloc}"


class ChangeflowClient:
    """A connection to ``ws/changeflow/`` that stays up (see the module's doc)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        min_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_after: float = 5.0,
        timeout: float = 10.0,
        retries: int = 3,
        max_frame_bytes: int = 1_048_576,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.origin = origin or origin_of(url)
        self.min_delay, self.max_delay, self.stable_after = min_delay, max_delay, stable_after
        self.timeout, self.retries = timeout, retries
        # Daphne's limit (1 MiB): a larger push is refused too_large before it is sent.
        self.max_frame_bytes = max_frame_bytes
        self.sizes: dict[int, int] = {}  # push id -> bytes of its frame, while it waits
        self.connection: Any = None
        self.connected = asyncio.Event()
        self.closed = False
        self.ids = itertools.count(1)
        self.names = itertools.count(1)
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        self.requests: dict[int, Any] = {}  # id -> Subscription, or the Future of a push
        self.received = self.acked = 0
        self.ack_timer: asyncio.TimerHandle | None = None
        self.notice: dict[str, Any] | None = None  # the last error frame about the connection
        self.refusal: ChangeflowError | None = None  # why the site refused us for good
        self.runner: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Future[None]] = set()  # small jobs (acks, subscribes), kept alive

    async def __aenter__(self) -> ChangeflowClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first connection (a refused handshake raises ``ChangeflowError``
        ``refused``); later ones are opened by the client itself."""
        try:
            self.connection = await self._open()
        except websockets.InvalidStatus as error:
            status = error.response.status_code
            raise ChangeflowError(
                "refused", f"the server refused the websocket ({status})"
            ) from None
        self.runner = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        """Close for good: no more reconnects; waiting pushes and subscriptions end."""
        self.closed = True
        if self.connection is not None:
            await self.connection.close()
        if self.runner is not None:
            self.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.runner
        error = ChangeflowError("closed", "the client was closed")
        for sub in self.subscriptions.values():
            sub.end(error)
        self._fail_requests(error)

    def subscribe(
        self, stream: str, *, snapshot: bool = False, filter: Any = None, sub: str | None = None
    ) -> Subscription:
        """A new server subscription to ``stream`` (see ``Subscription``)."""
        name = sub or f"py{next(self.names)}"
        subscription = Subscription(self, stream, name, snapshot, filter)
        self.subscriptions[(stream, name)] = subscription
        if self.refusal is not None:
            subscription.end(self.refusal)
        elif self.connected.is_set():
            self._spawn(self._send_subscribe(subscription))
        return subscription

    async def unsubscribe(self, subscription: Subscription) -> None:
        if self.subscriptions.pop((subscription.stream, subscription.name), None) is None:
            return
        subscription.end(ChangeflowError("unsubscribed", "the subscription was closed"))
        if self.connected.is_set():
            frame = {
                "action": "unsubscribe",
                "stream": subscription.stream,
                "sub": subscription.name,
            }
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send({**frame, "id": next(self.ids)})

    async def push(
        self,
        stream: str,
        data: Any,
        *,
        op: str = "insert",
        key: Any = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> dict[str, Any]:
        """Push and return the worker's answer (``pushed`` frame); ``ChangeflowError`` when
        refused, or ``timeout``/``unavailable``/``rate_limited`` once the retries are spent
        (then the push may or may not have been written; sending it again with the same key
        writes it once). A ``rate_limited`` push waits at least its ``retry_after`` (else
        ``min_delay``) before it goes again."""
        frame: dict[str, Any] = {"action": "push", "stream": stream, "data": data, "op": op}
        if key is not None:
            frame["key"] = key
        frame["idempotency_key"] = idempotency_key or str(uuid.uuid4())
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retries is None else retries
        wait_at_least = 0.0  # what a rate_limited answer asked for (retry_after)
        for attempt in range(retries + 1):
            if self.refusal is not None:
                raise self.refusal
            if attempt:
                await asyncio.sleep(max(self._backoff(attempt - 1), wait_at_least))
            request_id = next(self.ids)
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self.requests[request_id] = answer
            try:
                result = await asyncio.wait_for(
                    self._request({**frame, "id": request_id}, answer), timeout
                )
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                error = ChangeflowError("timeout", f"no answer within {timeout:g} s")
                continue
            except ChangeflowError as refused:
                if refused.code not in RETRYABLE:
                    raise
                error = refused
                wait_at_least = float(refused.frame.get("retry_after") or self.min_delay)
                continue
            finally:
                self.requests.pop(request_id, None)
            return result
        raise error

    async def _request(
        self, frame: dict[str, Any], answer: asyncio.Future[dict[str, Any]]
    ) -> dict[str, Any]:
        text = json.dumps(frame)
        size = len(text.encode())
        if size > self.max_frame_bytes:  # Daphne would close the connection (1009): not sent
            raise ChangeflowError(
                "too_large", f"a push frame of {size} bytes; at most {self.max_frame_bytes}"
            )
        await self.connected.wait()
        if self.refusal is not None:
            raise self.refusal
        self.sizes[frame["id"]] = size  # a too_large answer names the size, not the id
        try:
            await self._send_text(text)
            return await answer
        finally:
            self.sizes.pop(frame["id"], None)

    # -- the connection ------------------------------------------------------------------------

    async def _open(self) -> Any:
        return await websockets.connect(
            self.url,
            origin=Origin(self.origin),
            additional_headers=self.headers,
            open_timeout=10,
        )

    async def _run(self) -> None:
        """Read the connection; when it ends, open another (with backoff) and resume."""
        attempt = 0
        while not self.closed:
            if self.connection is None:
                await asyncio.sleep(self._backoff(attempt))
                try:
                    self.connection = await self._open()
                except (OSError, TimeoutError, websockets.WebSocketException) as error:
                    logger.warning("changeflow: connecting to %s failed: %r", self.url, error)
                    attempt += 1
                    continue
            opened = asyncio.get_running_loop().time()
            await self._on_open()
            try:
                async for text in self.connection:
                    await self._on_frame(json.loads(text))
            except websockets.ConnectionClosed:
                pass
            finally:
                code = self.connection.close_code
                self.connection = None
                self.connected.clear()
                # Pushes waiting for an answer are sent again (same key) on the next one.
                self._fail_requests(ChangeflowError("timeout", "the connection closed"))
            if code in FINAL_CLOSES and not self.closed:
                self._refused_for_good(code)
                return
            if not self.closed:
                logger.warning("changeflow: connection closed (%s); reconnecting", code)
            stable = asyncio.get_running_loop().time() - opened >= self.stable_after
            attempt = 0 if stable else attempt + 1

    async def _on_open(self) -> None:
        self.received = self.acked = 0
        self.connected.set()
        for subscription in list(self.subscriptions.values()):
            subscription.parts = None  # a snapshot cut short: the next one comes whole
            await self._send_subscribe(subscription)

    async def _send_subscribe(self, subscription: Subscription) -> None:
        request_id = next(self.ids)
        self.requests[request_id] = subscription
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._send(subscription.frame(request_id))

    async def _send(self, frame: dict[str, Any]) -> None:
        await self._send_text(json.dumps(frame))

    async def _send_text(self, text: str) -> None:
        if self.connection is None:
            raise websockets.ConnectionClosed(None, None)
        await self.connection.send(text)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        """Run a small job on its own (a task's boundary: a failure is logged)."""
        task = asyncio.ensure_future(job)
        self.tasks.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Future[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("changeflow client: a job failed", exc_info=task.exception())

    def _backoff(self, attempt: int) -> float:
        """Full jitter: a random wait below a ceiling that doubles from ``min_delay``."""
        return random.uniform(0, min(self.max_delay, self.min_delay * 2**attempt))

    def _refused_for_good(self, code: int) -> None:
        """The site closed with a code that trying again cannot help: every subscription
        and push ends with the error frame that came before (``unauthorized``, ``forbidden``)."""
        notice = self.notice or {}
        message = str(notice.get("message") or f"the server closed the connection ({code})")
        self.refusal = ChangeflowError(str(notice.get("code") or "refused"), message, notice)
        logger.error("changeflow: %s refused this client (%d): %s", self.url, code, message)
        self.closed = True
        self.connected.set()  # pushes waiting for a connection learn the refusal
        for subscription in list(self.subscriptions.values()):
            subscription.end(self.refusal)
        self.subscriptions.clear()

    def _fail_requests(self, error: ChangeflowError) -> None:
        """Forget the requests of a connection that closed; its pushes get ``error``."""
        for request in self.requests.values():
            if isinstance(request, asyncio.Future) and not request.done():
                request.set_exception(error)
        self.requests.clear()

    # -- frames ------------------------------------------------------------------------------

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        events = frame.get("events") if frame.get("event") == "batch" else [frame]
        for event in events or []:
            await self._dispatch(event)
        self.received += 1
        if self.received - self.acked >= ACK_EVERY:
            await self._ack()
        elif self.ack_timer is None:
            loop = asyncio.get_running_loop()
            self.ack_timer = loop.call_later(ACK_AFTER, lambda: self._spawn(self._ack()))

    async def _ack(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.received > self.acked and self.connection is not None:
            self.acked = self.received
            with contextlib.suppress(websockets.ConnectionClosed):
                await self._send({"action": "ack", "frames": self.received})

    async def _dispatch(self, frame: dict[str, Any]) -> None:
        event = frame.get("event")
        request_id = frame.get("id")
        # A frame with the id of a request is its answer.
        request = self.requests.pop(request_id, None) if isinstance(request_id, int) else None
        if isinstance(request, asyncio.Future):
            if not request.done():
                if event == "pushed":
                    request.set_result(frame)
                else:
                    message = str(frame.get("message", "push failed"))
                    request.set_exception(ChangeflowError(str(frame.get("code")), message, frame))
            return
        subscription = self.subscriptions.get((str(frame.get("stream")), str(frame.get("sub"))))
        if isinstance(request, Subscription):
            if event == "subscribed":
                request.confirm()
            elif event == "error":
                await self._refused(request, frame)
            return
        if event == "error" and frame.get("code") == "too_large" and "size" in frame:
            self._too_large(frame)  # a frame refused unread: its size says which push
            return
        if event == "error" and request is None and "stream" not in frame:
            self.notice = frame  # about the connection: a refusal's reason, before its close
            return
        if subscription is None:
            return  # an unsubscribed subscription's last frames, an unsubscribe's answer
        if event == "error" and frame.get("seq") is None:
            # The server ended the subscription: ``unavailable`` resumes it (``since``);
            # anything else (``forbidden``: logged out, permission revoked) ends it.
            await self._refused(subscription, frame)
            return
        await subscription.receive(frame)

    def _too_large(self, frame: dict[str, Any]) -> None:
        for request_id, size in list(self.sizes.items()):
            request = self.requests.get(request_id)
            if size == frame["size"] and isinstance(request, asyncio.Future):
                del self.requests[request_id]
                if not request.done():
                    message = str(frame.get("message", "frame too large"))
                    request.set_exception(ChangeflowError("too_large", message, frame))
                return

    async def _refused(self, subscription: Subscription, frame: dict[str, Any]) -> None:
        """A subscribe refused: asked again later when the refusal is for now, else ended."""
        code = str(frame.get("code"))
        if code in ("unavailable", "rate_limited"):
            delay = max(self._backoff(subscription.refusals), float(frame.get("retry_after") or 0))
            subscription.refusals += 1
            asyncio.get_running_loop().call_later(
                delay, lambda: self._spawn(self._resubscribe(subscription))
            )
            return
        self.subscriptions.pop((subscription.stream, subscription.name), None)
        subscription.end(ChangeflowError(code, str(frame.get("message")), frame))

    async def _resubscribe(self, subscription: Subscription) -> None:
        if (
            subscription.stream,
            subscription.name,
        ) in self.subscriptions and self.connected.is_set():
            await self._send_subscribe(subscription)
