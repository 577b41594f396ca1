"""Real processes for integration tests: a redis-server, a worker, Daphne.

Each is started on a free loopback port and waited for by what it prints
(never by sleeping), and stopped with SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagedProcess:
    """A subprocess whose output (stdout and stderr merged) is collected line by line."""

    def __init__(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> None:
        self.args = list(args)
        self.lines: list[str] = []
        self._new_lines: queue.Queue[str | None] = queue.Queue()
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._seen = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new_lines.put(line)
        self._new_lines.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(
        self, pattern: str, timeout: float = 30.0, *, from_start: bool = False
    ) -> re.Match[str]:
        """Wait until a line (after the last one matched, unless ``from_start``) matches."""
        regex = re.compile(pattern)
        start = 0 if from_start else self._seen
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    self._seen = index
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{self.args[0]}: no line matching {pattern!r} within {timeout} s; output:\n{self.output[-4000:]}"
                )
            try:
                if self._new_lines.get(timeout=min(remaining, 0.5)) is None and index >= len(
                    self.lines
                ):
                    raise RuntimeError(
                        f"{self.args[0]} exited ({self.process.poll()}) before printing {pattern!r}; "
                        f"output:\n{self.output[-4000:]}"
                    )
            except queue.Empty:
                pass

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class RedisServer:
    """A throwaway ``redis-server`` on a free port, keeping nothing on disk."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: ManagedProcess | None = None
        self._dir = tempfile.mkdtemp(prefix="changeflow-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it with apt-get)")
        self.process = ManagedProcess(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--loglevel",
                "notice",
            ]
        )
        self.process.wait_for(r"[Rr]eady to accept connections", timeout=15)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        """Stop and start on the same port (data is lost, as with --save "")."""
        self.stop()
        self.start()

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[RedisServer]:
        server = cls()
        server.start()
        try:
            yield server
        finally:
            server.stop()
            shutil.rmtree(server._dir, ignore_errors=True)


DAPHNE_READY = r"Listening on TCP address"
WORKER_READY = r"changeflow worker ready"


def start_daphne(
    application: str, port: int, *, env: dict[str, str] | None = None, cwd: str | None = None
) -> ManagedProcess:
    """Daphne serving ``application`` on 127.0.0.1:``port``; wait for ``DAPHNE_READY``."""
    return ManagedProcess(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
        env=env,
        cwd=cwd,
    )


def start_worker(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> ManagedProcess:
    """``manage.py changeflow`` (through ``python -m django``); wait for ``WORKER_READY``."""
    return ManagedProcess([sys.executable, "-m", "django", "changeflow", *args], env=env, cwd=cwd)
