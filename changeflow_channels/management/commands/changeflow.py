"""``python manage.py changeflow``: the worker, and its subcommands.

    manage.py changeflow [-q] [--watch PATTERN ...]     the worker
    manage.py changeflow push STREAM DATA [--op OP] [--key KEY] [--idempotency-key KEY]
    manage.py changeflow <subcommand> --help

Each subcommand lives in ``changeflow_channels/management/subcommands/<name>.py``
with ``HELP``, ``add_arguments(parser)`` and ``run(command, options)``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from argparse import SUPPRESS, ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from changeflow_channels.conf import get_settings
from changeflow_channels.metrics_http import MetricsServerError, serve_metrics
from changeflow_channels.worker import WorkerConfigError, create_worker


def subcommand_names() -> list[str]:
    """Every module in ``management/subcommands`` is a subcommand."""
    from changeflow_channels.management import subcommands

    return sorted(
        m.name for m in pkgutil.iter_modules(subcommands.__path__) if not m.name.startswith("_")
    )


def configure_logging(verbose: bool) -> None:
    """Log to stderr, at INFO when verbose else WARNING, unless the project configured logging.

    The project's configuration is left alone entirely (levels and handlers) when its
    ``LOGGING`` gives the ``changeflow_channels`` logger a level or handlers, or gives the
    root logger handlers. Every module logs to a child of ``changeflow_channels``
    (``logging.getLogger(__name__)``), so its records reach that logger's handlers.
    """
    package = logging.getLogger("changeflow_channels")
    configured = package.level != logging.NOTSET or package.handlers
    if configured or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO if verbose else logging.WARNING)


def start_metrics(port: int | None, host: str, configured: Any) -> None:
    """Serve the worker's metrics when a port is given (flag first, then the setting)."""
    if port is None:
        port = configured
    if port is None:
        return
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise CommandError(f"the metrics port must be a TCP port number, not {port!r}")
    try:
        serve_metrics(port, host)
    except MetricsServerError as error:
        raise CommandError(str(error)) from error


def add_django_options(parser: ArgumentParser) -> None:
    """Django's own options, accepted after a subcommand too (``changeflow status
    --settings x``). Django reads ``--settings`` and ``--pythonpath`` anywhere in the
    command line before any command runs; here they must only not be refused, and
    must not hide the values given before the subcommand (``SUPPRESS``)."""
    parser.add_argument("--settings", default=SUPPRESS, help="a settings module, as for manage.py")
    parser.add_argument("--pythonpath", default=SUPPRESS, help="a directory to add to sys.path")
    parser.add_argument(
        "--traceback", action="store_true", default=SUPPRESS, help="raise on CommandError"
    )


def subcommand(name: str) -> Any:
    return importlib.import_module(f"changeflow_channels.management.subcommands.{name}")


class Command(BaseCommand):
    help = (
        "Run the changeflow worker (follow RethinkDB changefeeds, write pushes), or a subcommand."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-q", "--quiet", action="store_true", help="log only warnings and errors"
        )
        parser.add_argument(
            "--watch",
            nargs="+",
            metavar="PATTERN",
            help='tables to follow instead of CHANGEFLOW_WATCH: "db.table", "db.*" or "*"',
        )
        parser.add_argument("--layer", default="default", help="channel layer alias")
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="serve Prometheus metrics on this port (/metrics); default CHANGEFLOW_METRICS_PORT",
        )
        parser.add_argument(
            "--metrics-host",
            default="0.0.0.0",
            metavar="HOST",
            help="the address the metrics server binds to (default 0.0.0.0)",
        )
        subparsers = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        for name in subcommand_names():
            module = subcommand(name)
            sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
            sub.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
            add_django_options(sub)
            module.add_arguments(sub)

    def handle(self, *args: Any, **options: Any) -> None:
        settings = get_settings()
        verbose = settings.verbose and not options["quiet"]
        configure_logging(verbose)
        if options.get("subcommand"):
            subcommand(options["subcommand"]).run(self, options)
            return
        try:
            worker = create_worker(watch=options["watch"], verbose=verbose, layer=options["layer"])
        except WorkerConfigError as error:
            raise CommandError(str(error)) from error
        start_metrics(options["metrics_port"], options["metrics_host"], settings.metrics_port)
        worker.run()
