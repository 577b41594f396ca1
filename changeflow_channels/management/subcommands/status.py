"""``manage.py changeflow status [--json]``: the workers alive, their tables, Redis, RethinkDB.

Exit status 0 when all is well; 1 when something needs attention (a component
unreachable, no worker alive, a watched table followed by no worker).
"""

from __future__ import annotations

import asyncio
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from changeflow_channels.conf import get_settings
from changeflow_channels.worker.cluster_status import gather, render

HELP = "Show the workers alive, the tables each follows (epoch, seq, lag), Redis and RethinkDB."


def add_arguments(parser: ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--layer", default="default", help="channel layer alias")


def run(command: BaseCommand, options: dict[str, Any]) -> None:
    status = asyncio.run(gather(get_settings(), options["layer"]))
    if options["json"]:
        command.stdout.write(json.dumps(status, indent=2, sort_keys=True))
    elif not options["quiet"] or not status["ok"]:
        command.stdout.write(render(status))
    if not status["ok"]:
        raise CommandError("; ".join(status["problems"]), returncode=1)
