"""Start the whole demo with one command (``make demo`` runs this).

    python demo/run.py [--host 127.0.0.1] [--port 8000] [--no-redis]

What it uses, said in its first lines:
- RethinkDB: ``CHANGEFLOW_RETHINKDB`` when set, else the in-memory ReQL test server it starts.
- Channel layer: ``REDIS_URL`` when set, else a ``redis-server`` it starts when one is
  installed; then the worker (``manage.py changeflow``) and Daphne run as separate processes,
  as in production. Without Redis (or with ``--no-redis``) the in-memory layer is used, and
  worker and Daphne share one process (the in-memory layer cannot cross processes).
Ctrl-C stops every process it started.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DEMO = Path(__file__).resolve().parent
REPO = DEMO.parent
sys.path[:0] = [str(DEMO), str(REPO)]


def say(line: str) -> None:
    sys.stdout.write(f"[demo] {line}\n")
    sys.stdout.flush()


def wait_for_port(host: str, port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args[2] if len(process.args) > 2 else process.args} exited early"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class Launcher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.children: list[subprocess.Popen] = []
        self.cleanups: list = []

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        # A session of its own: Ctrl-C reaches only this launcher, which stops everything in
        # order (Daphne, the worker, then Redis and RethinkDB), so nobody sees its servers go.
        child = subprocess.Popen(argv, cwd=DEMO, env={**os.environ, **env}, start_new_session=True)
        self.children.append(child)
        return child

    def rethinkdb(self) -> tuple[str, str]:
        url = os.environ.get("CHANGEFLOW_RETHINKDB")
        if url:
            return url, f"RethinkDB at {url}"
        from changeflow_channels.testing.processes import ManagedProcess, free_port

        port = free_port()
        server = ManagedProcess(
            [sys.executable, "-m", "changeflow_channels.testing.reql_server", "--port", str(port)],
            env={"PYTHONPATH": str(REPO)},
            new_session=True,
        )
        server.wait_for(r"listening on", 30)
        self.cleanups.append(server.stop)
        url = f"rethinkdb://admin@127.0.0.1:{port}"
        return url, f"the in-memory ReQL test server at {url} (data is lost on exit)"

    def redis(self) -> tuple[str | None, str]:
        url = os.environ.get("REDIS_URL")
        if url:
            return url, f"Redis at {url}"
        if self.args.no_redis or shutil.which("redis-server") is None:
            return (
                None,
                "the in-memory channel layer (no redis-server; worker and Daphne in one process)",
            )
        from changeflow_channels.testing.processes import RedisServer

        server = RedisServer(new_session=True)
        server.start()
        self.cleanups.append(server.stop)
        return server.url, f"a redis-server of its own at {server.url}"

    def run(self) -> int:
        host, port = self.args.host, self.args.port
        rethinkdb_url, rethinkdb_mode = self.rethinkdb()
        redis_url, redis_mode = self.redis()
        say(f"RethinkDB: {rethinkdb_mode}")
        say(f"Channel layer: {redis_mode}")
        mode = (
            f"{'ReQL test server' if 'CHANGEFLOW_RETHINKDB' not in os.environ else 'RethinkDB'} + "
        )
        mode += (
            "Redis (worker and Daphne as separate processes)"
            if redis_url
            else "in-memory layer (one process)"
        )
        env = {
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "PYTHONPATH": os.pathsep.join([str(DEMO), str(REPO)]),
            "CHANGEFLOW_RETHINKDB": rethinkdb_url,
            "CHANGEFLOW_DEMO_MODE": mode,
            "PYTHONUNBUFFERED": "1",
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
            self.start([sys.executable, "-m", "django", "changeflow"], env)
            web = self.start(
                [
                    sys.executable,
                    "-m",
                    "changeflow_channels.serve",  # Daphne, as the README runs it
                    "-b",
                    host,
                    "-p",
                    str(port),
                    "demo.asgi:application",
                ],
                env,
            )
        else:
            web = self.start(
                [
                    sys.executable,
                    str(DEMO / "run.py"),
                    "--embedded",
                    "--host",
                    host,
                    "--port",
                    str(port),
                ],
                env,
            )
        wait_for_port(host, port, web)
        say(f"Demo running at http://{host}:{port}/  (Ctrl-C stops it)")
        # This interpreter (the venv's): a bare ``python`` may lack the driver.
        python = (
            os.path.relpath(sys.executable)
            if sys.executable.startswith(os.getcwd())
            else sys.executable
        )
        say(f"Write directly with the driver: {python} demo/write_direct.py --url {rethinkdb_url}")
        while all(child.poll() is None for child in self.children):
            time.sleep(0.2)
        say("a process of the demo exited; stopping the others")
        return 1

    def stop(self) -> None:
        """In dependency order: Daphne (no new websockets), the worker (it answers the pushes
        it holds), then Redis and RethinkDB, each once the one before has exited."""
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        for cleanup in reversed(self.cleanups):
            cleanup()


def run_embedded(host: str, port: int) -> None:
    """Worker and Daphne on one event loop: the in-memory layer cannot cross processes."""
    import django

    django.setup()
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import twisted_loop  # installs Twisted's asyncio reactor
    from demo.asgi import application

    from changeflow_channels.management.commands.changeflow import configure_logging
    from changeflow_channels.serve import ChangeflowServer
    from changeflow_channels.worker import create_worker

    configure_logging(True)
    worker = create_worker()
    twisted_loop.call_soon(lambda: twisted_loop.create_task(worker.arun()))
    endpoints = build_endpoint_description_strings(host=host, port=port)
    ChangeflowServer(application, endpoints=endpoints).run()


def main() -> int:
    parser = argparse.ArgumentParser(description="Start the changeflow-channels demo.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-redis", action="store_true", help="use the in-memory channel layer")
    parser.add_argument("--embedded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.embedded:
        run_embedded(args.host, args.port)
        return 0
    launcher = Launcher(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return launcher.run()
    except KeyboardInterrupt:
        say("stopping")
        return 0
    finally:
        launcher.stop()


if __name__ == "__main__":
    sys.exit(main())
