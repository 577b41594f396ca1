"""Handler hooks: ``flow_handlers(database, table, change)``, run for every change.

Each handler gets a queue and a task of its own, so a slow or hanging handler
delays neither the feed nor the other handlers, and still sees the changes in
order. Each call has a timeout; exceptions and timeouts are logged with the
handler's name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import importlib.util
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from .. import metrics

logger = logging.getLogger(__name__)

HANDLER_NAME = "flow_handlers"
# Beyond this many changes waiting for one handler, new ones are skipped (and logged).
MAX_PENDING = 10_000


class DaemonThreadExecutor(concurrent.futures.Executor):
    """Runs each call in a fresh daemon thread.

    A sync handler that hangs cannot be killed; in a daemon thread it at least
    cannot keep the worker from exiting (pool threads are joined at exit).
    """

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # a thread's boundary: the caller gets the error
                future.set_exception(error)

        threading.Thread(target=run, name="changeflow-hook", daemon=True).start()
        return future


class HandlerError(Exception):
    """A handler module that cannot be used; the message says why."""


@dataclass(frozen=True)
class Handler:
    name: str
    func: Callable[..., Any]

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


def project_module(settings_module: str | None) -> str | None:
    """``<project package>.changeflow`` for ``DJANGO_SETTINGS_MODULE = "<project>.settings"``."""
    if not settings_module or "." not in settings_module:
        return None
    return settings_module.split(".", 1)[0] + ".changeflow"


def load_handler(module_path: str) -> Handler:
    """Import ``module_path`` and take its ``flow_handlers``."""
    try:
        module = importlib.import_module(module_path)
    except Exception as error:  # the user's module: any error, told as a HandlerError
        raise HandlerError(f"cannot import handler module {module_path!r}: {error}") from error
    func = getattr(module, HANDLER_NAME, None)
    if not callable(func):
        raise HandlerError(f"handler module {module_path!r} has no {HANDLER_NAME}() function")
    return Handler(f"{module_path}.{HANDLER_NAME}", func)


def handler_modules(configured: Iterable[str], settings_module: str | None) -> list[str]:
    """The configured modules, plus the project's ``changeflow`` module when it exists."""
    modules = list(configured)
    project = project_module(settings_module)
    if project and project not in modules:
        with contextlib.suppress(ImportError, ValueError):
            if importlib.util.find_spec(project) is not None:
                modules.insert(0, project)
    return modules


def load_handlers(configured: Iterable[str], settings_module: str | None) -> list[Handler]:
    return [load_handler(path) for path in handler_modules(configured, settings_module)]


class HookRunner:
    """Runs every handler for every change, each handler on its own queue."""

    def __init__(self, handlers: Iterable[Handler], timeout: float) -> None:
        self.handlers = list(handlers)
        self.timeout = timeout
        self._queues: list[asyncio.Queue[tuple[str, str, dict[str, Any]] | None]] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for handler in self.handlers:
            queue: asyncio.Queue[tuple[str, str, dict[str, Any]] | None] = asyncio.Queue()
            self._queues.append(queue)
            self._tasks.append(asyncio.ensure_future(self._run(handler, queue)))

    def submit(self, database: str, table: str, change: dict[str, Any]) -> None:
        """Queue a change for every handler; never blocks."""
        for handler, queue in zip(self.handlers, self._queues, strict=True):
            if queue.qsize() >= MAX_PENDING:
                metrics.for_handler(handler.name).skipped.inc()
                logger.error(
                    "handler %s is %d changes behind; skipping a change of %s.%s",
                    handler.name,
                    MAX_PENDING,
                    database,
                    table,
                )
                continue
            queue.put_nowait((database, table, change))

    async def stop(self, drain_timeout: float) -> None:
        """Let the handlers finish what is queued (within ``drain_timeout``), then stop."""
        for queue in self._queues:
            queue.put_nowait(None)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=drain_timeout)
            for task in pending:
                task.cancel()
            for handler, task in zip(self.handlers, self._tasks, strict=True):
                if task in pending:
                    logger.warning("handler %s still busy at shutdown; stopped", handler.name)

    async def _run(
        self, handler: Handler, queue: asyncio.Queue[tuple[str, str, dict[str, Any]] | None]
    ) -> None:
        call = handler.func
        handler_metrics = metrics.for_handler(handler.name)
        if not handler.is_async:
            executor = DaemonThreadExecutor()
            # asgiref's types ask for a ThreadPoolExecutor; any Executor works.
            call = sync_to_async(handler.func, thread_sensitive=False, executor=executor)  # type: ignore[call-overload, arg-type]
        while (item := await queue.get()) is not None:
            database, table, change = item
            started = time.perf_counter()
            try:
                await asyncio.wait_for(call(database, table, change), self.timeout)
            except asyncio.TimeoutError:
                handler_metrics.timeouts.inc()
                logger.error(
                    "handler %s timed out after %g s on a change of %s.%s%s",
                    handler.name,
                    self.timeout,
                    database,
                    table,
                    "" if handler.is_async else " (its thread may still be running)",
                )
            except Exception:  # a call into user code: counted and logged
                handler_metrics.exceptions.inc()
                logger.exception(
                    "handler %s failed on a change of %s.%s", handler.name, database, table
                )
            handler_metrics.duration.observe(time.perf_counter() - started)
