"""``manage.py changeflow sync [MODEL ...]``: copy registered models' rows into RethinkDB."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from rethinkdb.errors import ReqlError

from changeflow_channels.conf import get_settings
from changeflow_channels.mirror.backfill import BATCH_SIZE, SyncError, SyncResult, sync_models
from changeflow_channels.mirror.config import ModelFlow, load_flows

HELP = (
    "Copy the rows of the models in CHANGEFLOW_MODELS (all, or those named as app.Model) "
    "into RethinkDB and remove the documents whose objects are gone."
)


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL", help='"app_label.ModelName"')
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help="rows written per query (default 500)"
    )


def _selected(names: list[str]) -> list[ModelFlow]:
    flows, errors = load_flows(get_settings())
    by_model = {flow.model: flow for flow in flows}
    if not names:
        if not flows and errors:
            raise CommandError(f"CHANGEFLOW_MODELS is invalid: {errors[0]}")
        return flows
    selected = []
    for name in names:
        try:
            model = apps.get_model(name)
        except (LookupError, ValueError):
            raise CommandError(
                f"{name!r} is not an installed model (use app_label.ModelName)"
            ) from None
        if model not in by_model:
            raise CommandError(
                f"{model._meta.label} is not in CHANGEFLOW_MODELS (or its entry is invalid; see manage.py check)"
            )
        selected.append(by_model[model])
    return selected


class _Report:
    """Progress on one line on a terminal; one summary line per model always."""

    def __init__(self, command: BaseCommand, quiet: bool) -> None:
        self.out = command.stdout
        self.tty = not quiet and self.out.isatty()
        self.quiet = quiet

    def progress(self, flow: ModelFlow, done: int, total: int) -> None:
        if self.tty:
            self.out.write(f"\r{flow.label} {done}/{total}", ending="")
            self.out.flush()

    def done(self, result: SyncResult) -> None:
        if self.quiet:
            return
        line = (
            f"{result.flow.label}: {result.copied} rows copied to {result.flow.stream}, "
            f"{result.removed} stale documents removed"
        )
        self.out.write(("\r\033[K" if self.tty else "") + line)


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    if options["batch_size"] < 1:
        raise CommandError("--batch-size must be at least 1")
    flows = _selected(options["models"])
    if not flows:
        raise CommandError("No models to sync: CHANGEFLOW_MODELS is empty.")
    report = _Report(command, options["quiet"])
    url = get_settings().rethinkdb
    try:
        sync_models(
            flows, url, batch_size=options["batch_size"], progress=report.progress, done=report.done
        )
    except (SyncError, ReqlError, OSError, ValueError) as error:
        if report.tty:
            command.stdout.write("")
        raise CommandError(f"sync failed ({url}): {error}") from None
