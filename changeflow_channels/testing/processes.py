"""Real processes for integration tests: a redis-server, a RethinkDB, a worker, Daphne.

Each is started on a free loopback port and waited for by what it prints
(never by sleeping), and stopped with SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
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

from rethinkdb import RethinkDB

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def reusable_port(taken: Sequence[int] = ()) -> int:
    """A free port below the kernel's ephemeral range, for a server that restarts on
    the same port: no outgoing connection can take it while the server is down (a
    port from ``free_port`` can, and the restart then fails to bind)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low = int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


class ManagedProcess:
    """A subprocess whose output (stdout and stderr merged) is collected line by line."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        new_session: bool = False,
    ) -> None:
        """``new_session``: the process leads a session (and process group) of its own, so
        that a terminal's Ctrl-C does not reach it: its owner stops it, in its own order."""
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
            start_new_session=new_session,
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

    def __init__(self, port: int | None = None, *, new_session: bool = False) -> None:
        self.port = port or reusable_port()
        self.new_session = new_session  # see ManagedProcess
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
            ],
            new_session=self.new_session,
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


RETHINKDB_READY = r"^Server ready"
RETHINKDB_START_TIMEOUT = 60.0


def established_connections(port: int) -> int:
    """How many TCP connections to 127.0.0.1:``port`` are established (server side)."""
    count = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                count += 1
    return count


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until every thread of process ``pid`` is stopped (state ``T``) by a signal."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError),
                open(f"/proc/{pid}/task/{task}/stat", encoding="ascii", errors="replace") as stat,
            ):
                states.append(stat.read().rsplit(")", 1)[1].split()[0])
        if all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} not stopped within {timeout} s: {states}")
        time.sleep(0.001)  # polling /proc: a stop cannot be awaited


class RethinkDBServer:
    """A throwaway real ``rethinkdb`` server, with the fault injection of the tests.

    Free driver and cluster ports, a temporary data directory, loopback only, no
    web admin. Faults act on the real process: ``restart`` is a crash (SIGKILL)
    and a start on the same ports, on the same data directory (``keep_data``) or
    a fresh one (data loss); ``freeze``/``thaw`` are SIGSTOP/SIGCONT (the kernel
    keeps connections open and accepts new ones, nothing answers);
    ``drop_connections`` is a crash and an immediate restart on the same data and
    ports, since a real server has no way to cut its clients from outside.
    """

    host = "127.0.0.1"

    def __init__(self, binary: str, *, extra_args: Sequence[str] = ()) -> None:
        """``extra_args``: more options of the command line (``--server-name``,
        ``--join``: see ``cluster.py``)."""
        self.binary = os.path.abspath(binary)
        self.port = reusable_port()
        self.cluster_port = reusable_port(taken=[self.port])
        self.extra_args = list(extra_args)
        self.process: ManagedProcess | None = None
        self.frozen = False
        self._root = tempfile.mkdtemp(prefix="changeflow-rethinkdb-")
        self._generation = 0

    @property
    def url(self) -> str:
        return f"rethinkdb://admin@{self.host}:{self.port}"

    @property
    def directory(self) -> str:
        return os.path.join(self._root, f"data{self._generation}")

    @property
    def output(self) -> str:
        return self.process.output if self.process is not None else ""

    def alive(self) -> bool:
        """Whether the server's process runs (not stopped, killed or crashed)."""
        return self.process is not None and self.process.process.poll() is None

    def start(self, *, wait_tables: bool = True) -> None:
        """Start (on the same ports and data directory as before); wait until it is ready
        and every table of every database is ready (unless not ``wait_tables``: a
        server of a cluster with others still down, whose tables cannot all be ready)."""
        if self.alive():
            return
        self.launch()
        self.wait_ready(wait_tables=wait_tables)

    def launch(self) -> None:
        """Start the process (same ports and data directory as before), without waiting."""
        if not os.access(self.binary, os.X_OK):
            raise RuntimeError(f"no RethinkDB server binary at {self.binary}")
        self.process = ManagedProcess(
            [
                self.binary,
                "--directory",
                self.directory,
                "--bind",
                self.host,
                "--no-default-bind",
                "--driver-port",
                str(self.port),
                "--cluster-port",
                str(self.cluster_port),
                "--no-http-admin",
                *self.extra_args,
            ]
        )
        self.frozen = False

    def wait_ready(self, *, wait_tables: bool = True) -> None:
        """Until the launched server says it is ready (and its tables are: ``start``)."""
        if self.process is None:
            raise RuntimeError("the server was never launched")
        self.process.wait_for(RETHINKDB_READY, timeout=RETHINKDB_START_TIMEOUT, from_start=True)
        if wait_tables:
            self._wait_tables_ready()
        logger.info("RethinkDB ready on %s (data in %s)", self.url, self.directory)

    def _wait_tables_ready(self) -> None:
        r = RethinkDB()
        with r.connect(host=self.host, port=self.port, timeout=RETHINKDB_START_TIMEOUT) as conn:
            for database in r.db_list().run(conn):
                if database != "rethinkdb":
                    r.db(database).wait(timeout=RETHINKDB_START_TIMEOUT).run(conn)

    def stop(self, *, keep_data: bool = True) -> None:
        """A clean shutdown: SIGTERM, then SIGKILL if it lingers."""
        if self.process is not None:
            self.thaw()
            self.process.stop()
        if not keep_data:
            self._forget_data()

    def kill(self) -> None:
        """A crash: SIGKILL, no shutdown of any kind."""
        if self.process is not None:
            self.process.kill()
            self.frozen = False

    def restart(self, *, keep_data: bool = True, down_for: float = 0.0) -> None:
        """Crash, stay down ``down_for`` seconds, start again on the same ports,
        with the data (``keep_data``) or on a fresh directory."""
        self.kill()
        if not keep_data:
            self._forget_data()
        if down_for:
            time.sleep(down_for)  # the outage itself, not a wait for something
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: connections stay open, nothing is read or answered. Returns once
        every thread of the server is stopped (the signal itself is asynchronous)."""
        if self.process is not None:
            self.process.signal(signal.SIGSTOP)
            self.frozen = True
            wait_stopped(self.process.process.pid)

    def thaw(self) -> None:
        """SIGCONT: the server reads and answers what was sent meanwhile."""
        if self.process is not None and self.frozen:
            self.process.signal(signal.SIGCONT)
            self.frozen = False

    def drop_connections(self) -> int:
        """Every client connection drops (by a crash and a restart on the same data
        and ports: see the class doc). Returns how many there were."""
        count = established_connections(self.port)
        self.restart(keep_data=True)
        return count

    def _forget_data(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self._generation += 1

    def close(self) -> None:
        """Stop and remove the data directories."""
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def running(cls, binary: str) -> Iterator[RethinkDBServer]:
        server = cls(binary)
        try:
            server.start()
            yield server
        finally:
            server.close()


DAPHNE_READY = r"Listening on TCP address"
WORKER_READY = r"changeflow worker ready"


def start_daphne(
    application: str,
    port: int,
    *,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    options: Sequence[str] = (),
    module: str = "changeflow_channels.serve",
) -> ManagedProcess:
    """Daphne serving ``application`` on 127.0.0.1:``port``, as the README runs it
    (``changeflow_channels.serve``, with Daphne's ``options``; ``module="daphne"``: plain
    Daphne, which lets the frame limits disagree); wait for ``DAPHNE_READY``."""
    address = ["-b", "127.0.0.1", "-p", str(port)]
    return ManagedProcess(
        [sys.executable, "-m", module, *address, *options, application],
        env=env,
        cwd=cwd,
    )


def start_worker(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> ManagedProcess:
    """``manage.py changeflow`` (through ``python -m django``); wait for ``WORKER_READY``."""
    return ManagedProcess([sys.executable, "-m", "django", "changeflow", *args], env=env, cwd=cwd)
