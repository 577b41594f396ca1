"""``manage.py changeflow clean [-s MINUTES] [-q]``: the autoclean, once or at an interval.

Talks to RethinkDB directly (the worker need not run): deletes what the
retentions of ``CHANGEFLOW_TABLES`` say has expired and prints, per table, what
it deleted. With ``-s MINUTES`` it repeats until Ctrl-C (like ``gencharts -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from rethinkdb.errors import ReqlDriverError, ReqlError

from changeflow_channels.conf import get_settings
from changeflow_channels.rethink import close_quietly, connect, is_connection_error, new_driver
from changeflow_channels.rethinkdb_url import RethinkDBAddress, parse_rethinkdb_url
from changeflow_channels.tables.autoclean import CleanResult, clean_tables, with_retention
from changeflow_channels.tables.config import TableConfig, TableConfigError, parse_tables

HELP = "Delete the documents past their retention (CHANGEFLOW_TABLES), once or every -s minutes."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument(
        "-s",
        "--every",
        type=float,
        metavar="MINUTES",
        help="repeat every MINUTES minutes until interrupted (Ctrl-C)",
    )


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    settings = get_settings()
    try:
        tables = with_retention(parse_tables(settings.tables))
        address = parse_rethinkdb_url(settings.rethinkdb)
    except (TableConfigError, ValueError) as error:
        raise CommandError(str(error)) from None
    if not tables:
        raise CommandError("nothing to clean: no table in CHANGEFLOW_TABLES has a retention")
    every = options.get("every")
    if every is not None and not every > 0:
        raise CommandError(f"-s takes a positive number of minutes, not {every:g}")
    cleaner = Cleaner(command, address, tables, quiet=options["quiet"])
    if every is None:
        if not asyncio.run(cleaner.once()):
            raise CommandError("some tables could not be cleaned")
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(cleaner.forever(every * 60))


class Cleaner:
    """Runs the clean rounds and prints their results."""

    def __init__(
        self,
        command: BaseCommand,
        address: RethinkDBAddress,
        tables: list[TableConfig],
        *,
        quiet: bool,
    ) -> None:
        self.command = command
        self.address = address
        self.tables = tables
        self.quiet = quiet
        self.r = new_driver()

    async def once(self) -> bool:
        """One round; True when every table was cleaned."""
        try:
            conn = await connect(self.r, self.address)
        except ReqlDriverError as error:
            self.command.stderr.write(f"cannot reach RethinkDB at {self.address.where}: {error}")
            return False
        try:
            results = await clean_tables(self.r, conn, self.tables)
        except ReqlError as error:
            if not is_connection_error(error, conn):
                raise
            self.command.stderr.write(f"lost the connection to RethinkDB: {error}")
            return False
        finally:
            await close_quietly(conn)
        self._report(results)
        return all(result.error is None for result in results)

    async def forever(self, seconds: float) -> None:
        """A round every ``seconds`` until interrupted; a failed round is retried next time."""
        while True:
            await self.once()
            await asyncio.sleep(seconds)

    def _report(self, results: list[CleanResult]) -> None:
        for config, result in zip(self.tables, results, strict=True):
            assert config.retention is not None
            line = result.describe(config.retention)
            if result.error is not None:
                self.command.stderr.write(line)
            elif not self.quiet:
                self.command.stdout.write(line)
